"""Which CBT-LLM parts an answer has, on the CPU: MiniLM sentence embeddings + light cues -> a sentence classifier.

At load, :class:`EmbeddedStructureJudge` fits a multinomial logistic regression (the act
classifier's :func:`~rewards.acts.softmax.fit_softmax`, from zero weights, so every load gives the
same model) on the example sentences of ``data/examples.yaml`` (written for cbtgym): one class per
part of :data:`~rewards.structure.parts.PARTS` plus ``other``. Its features are the sentence's
all-MiniLM-L6-v2 embedding and one 0/1 cue per part (``cues.yaml``), scaled down so that a cue adds
evidence without deciding alone.

An answer is cut into units: its sentences (:func:`rewards.acts.speech.segments`) and, where a
sentence joins two clauses ("..., and ...", ";", a dash), each clause of four words or more,
because one sentence often validates and encourages at once. A part is present when some unit gives
it probability >= ``threshold``; its score is the best unit's probability, its evidence that unit.
``threshold`` (0.3) and ``l2`` were chosen by 5-fold cross-validation over the example sentences
(per-part F1 of held-out sentences; flat between 0.2 and 0.4, lower at 0.5): six classes share the
probability, so a sentence rarely gives one part more than half.

``bench/data/structure_eval.jsonl`` is held out from the fit and only measured
(``bench/structure_labels.py``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cbtgym.strict_yaml import load_yaml

from ..acts.softmax import SoftmaxRegression, fit_softmax
from ..acts.speech import segments
from .parts import PARTS, StructureLabel, check_answers

EXAMPLES_FILE = Path(__file__).with_name("data") / "examples.yaml"
CUES_FILE = Path(__file__).with_name("cues.yaml")
#: The classes of the sentence classifier: the five parts, then everything else.
CLASSES: tuple[str, ...] = (*PARTS, "other")
#: A cue feature's value when it fires; embeddings are unit vectors, so a full 1 would outweigh them.
CUE_WEIGHT = 0.5
#: Clauses shorter than this are not classified on their own ("and thanks").
MIN_CLAUSE_WORDS = 4

_CLAUSE_BREAK = re.compile(r"\s*(?:;|\s[-\u2013\u2014]\s|,\s+(?=(?:and|but|so)\s))\s*")

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def _default_embed(texts: Sequence[str]) -> np.ndarray:
    from cbtgym.embeddings import embed

    return embed(list(texts))


def load_examples(path: str | Path = EXAMPLES_FILE) -> list[tuple[str, str]]:
    """``(sentence, class)`` pairs of an examples file (a mapping of each class of :data:`CLASSES` to sentences)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or set(data) != set(CLASSES):
        raise ValueError(f"{path}: needs exactly the keys {list(CLASSES)} (got {sorted(data) if isinstance(data, dict) else data!r})")
    return [(str(s), c) for c in CLASSES for s in data[c]]


@functools.lru_cache(maxsize=None)
def load_cues(path: str | Path = CUES_FILE) -> dict[str, re.Pattern[str]]:
    """``part -> compiled cue`` of a cues file (one regular expression per part)."""
    data = load_yaml(path)
    missing = [p for p in PARTS if p not in (data or {})]
    if missing:
        raise ValueError(f"{path}: no cue for {missing}; give one regular expression per part")
    return {p: re.compile(data[p], re.IGNORECASE) for p in PARTS}


def units(answer: str) -> list[str]:
    """The sentences of an answer and the clauses (of >= :data:`MIN_CLAUSE_WORDS` words) of those that join two."""
    out: list[str] = []
    for sentence in segments(answer):
        out.append(sentence)
        clauses = [c.strip(" ,") for c in _CLAUSE_BREAK.split(sentence)]
        clauses = [re.sub(r"^(?:and|but|so)\s+", "", c, flags=re.IGNORECASE) for c in clauses]
        if len(clauses) > 1:
            out += [c for c in clauses if len(c.split()) >= MIN_CLAUSE_WORDS]
    return list(dict.fromkeys(out))


class EmbeddedStructureJudge:
    """Deterministic CPU judge of the five CBT-LLM parts (see the module docstring).

    Args:
        examples: ``(sentence, class)`` pairs, or an examples YAML path (default ``data/examples.yaml``).
        embed: ``texts -> (n, d)`` L2-normalised embeddings (default all-MiniLM-L6-v2 via
            :mod:`cbtgym.embeddings`); tests of logic may pass a cheaper one.
        threshold: A part is present when a unit's probability for it reaches this.
        l2: Weight penalty of the regression.
        iterations: Gradient steps of the fit.
    """

    name = "structure_embedded"

    def __init__(self, examples: Sequence[tuple[str, str]] | str | Path = EXAMPLES_FILE, *, embed: EmbedFn | None = None,
                 threshold: float = 0.3, l2: float = 1e-3, iterations: int = 800) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1) (got {threshold}); 0.3 is the default")
        pairs = load_examples(examples) if isinstance(examples, (str, Path)) else list(examples)
        unknown = sorted({c for _, c in pairs} - set(CLASSES))
        if unknown:
            raise ValueError(f"EmbeddedStructureJudge: unknown classes {unknown}; use {list(CLASSES)}")
        self.threshold = threshold
        self._embed = embed or _default_embed
        self._cues = load_cues()
        X = self.features([s for s, _ in pairs])
        y = np.array([CLASSES.index(c) for _, c in pairs])
        self.model: SoftmaxRegression = fit_softmax(X, y, len(CLASSES), l2, iterations)
        self.n_examples = len(pairs)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d + 5)``: each text's embedding, then its part cues (:data:`CUE_WEIGHT` when a cue fires)."""
        texts = list(texts)
        cues = np.array([[CUE_WEIGHT * bool(self._cues[p].search(t)) for p in PARTS] for t in texts], dtype=np.float32)
        return np.hstack([self._embed(texts), cues.reshape(len(texts), len(PARTS))])

    def judge(self, answers: Sequence[str], questions: Sequence[str] | None = None) -> list[StructureLabel]:
        """Label a batch of answers (one embedding pass for all their units).

        Args:
            answers: The answers to judge.
            questions: Accepted for the common interface with the LLM judge; not used.

        Returns:
            One :class:`~rewards.structure.parts.StructureLabel` per answer; an empty answer has no part.
        """
        answers, _ = check_answers(answers, questions, type(self).__name__)
        per_answer = [units(a) for a in answers]
        flat = [u for us in per_answer for u in us]
        probs = self.model.probs(self.features(flat)) if flat else np.zeros((0, len(CLASSES)))
        out, start = [], 0
        for us in per_answer:
            p = probs[start : start + len(us)]
            start += len(us)
            label = StructureLabel(present={part: False for part in PARTS})
            for k, part in enumerate(PARTS):
                if not us:
                    label.scores[part] = 0.0
                    continue
                best = int(p[:, k].argmax())
                label.scores[part] = float(p[best, k])
                label.present[part] = label.scores[part] >= self.threshold
                if label.present[part]:
                    label.evidence[part] = us[best]
            label.rationale = f"{len(us)} units; parts: {', '.join(label.parts) or 'none'}"
            out.append(label)
        return out

    def __repr__(self) -> str:
        return f"EmbeddedStructureJudge({self.n_examples} examples, threshold={self.threshold})"


@functools.lru_cache(maxsize=1)
def default_judge() -> EmbeddedStructureJudge:
    """The judge on the default examples, fitted once per process and shared (it is read-only after its fit)."""
    return EmbeddedStructureJudge()
