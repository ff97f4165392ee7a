"""What a therapist move means to a simulated patient: which disclosure layer it reaches, if any.

The rule patient (and the LLM patient in ``disclosure="gated"`` mode) opens a layer of its
profile when the therapist's move fits that layer in meaning, not when it contains cue words:

* the MiniLM similarity between the turn and the example moves of each layer in
  ``moves.yaml`` (its best match per layer), so any wording of the same question fits;
* the same similarity to moves that reach no layer (advice, small talk, talk about the
  therapist, therapy-word lists, chatter off the patient's topic): a turn as close to these
  as to its best layer opens nothing, whatever words it borrows;
* the act label of the embedded act classifier (:mod:`rewards.acts`): a solution or a
  lecture opens nothing even when it ends in a question mark, and a question about
  emotions, events or thoughts leans toward the layers it asks about;
* a count of therapy jargon: a patient does not answer a pile of technical terms.

Surface cues (:mod:`cbtgym.patients.cues`) still decide warmth, pressure and closings.
Everything is deterministic; example embeddings are computed once per process, turn
embeddings are memoised by text, and :meth:`MoveReader.read` embeds a whole batch at once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from ..embeddings import EMBED_DIM, embed, encode_cached
from .cues import Cues, read_cues

MOVES_FILE = Path(__file__).with_name("moves.yaml")
EmbedFn = Callable[[Sequence[str]], np.ndarray]

#: Act types that ask about what a layer holds; the layers they lean toward by ``act_bonus``.
ACT_LAYERS = {
    "question_emotions": ("emotions",),
    "question_experiences": ("experience", "reaction"),
    "question_perspectives": ("thought", "belief"),
}
#: Act categories that never open a layer: advice and teaching, however they are worded.
CLOSED_CATEGORIES = ("solution", "psychoeducation")


@dataclass(frozen=True)
class Move:
    """One therapist turn as the patient reads it.

    Attributes:
        cues: Surface cues (validation, pressure, closing).
        act: The act type of the embedded act classifier (``""`` when not classified).
        act_category: Its category.
        fit: Per layer, the turn's best similarity to that layer's example moves (plus the act bonus).
        none: The turn's best similarity to moves that reach no layer.
        jargon: Therapy terms in the turn.
    """

    cues: Cues
    act: str
    act_category: str
    fit: dict[str, float]
    none: float
    jargon: int
    thresholds: dict[str, float]

    @property
    def off_task(self) -> float:
        """How much closer the turn is to moves that reach no layer than to its best layer (0 when it is not)."""
        return max(0.0, self.none - max(self.fit.values(), default=0.0))

    @property
    def keyword_list(self) -> bool:
        """The turn piles up therapy words: a list to be matched, not a question to answer."""
        return self.jargon > self.thresholds["max_jargon"]

    @property
    def asks(self) -> bool:
        """A question the patient can answer: asked, not advice or a lecture, not a keyword list,
        and closer to some layer than to the moves that reach none."""
        asked = self.cues.question or self.act_category == "question"
        return (asked and self.act_category not in CLOSED_CATEGORIES and not self.keyword_list
                and max(self.fit.values(), default=0.0) >= self.none)

    def layers(self) -> list[str]:
        """The layers this move fits, best fit first (empty when it asks nothing answerable)."""
        if not self.asks:
            return []
        fit_min, margin = self.thresholds["fit"], self.thresholds["margin"]
        ok = [layer for layer, f in self.fit.items() if f >= fit_min and f >= self.none + margin]
        return sorted(ok, key=lambda layer: -self.fit[layer])


class MoveReader:
    """Reads batches of therapist turns into :class:`Move` objects.

    Args:
        acts: An act classifier with ``classify(texts) -> [label with .type and .category]``
            (default: the process-wide embedded classifier of :mod:`rewards.acts`).
        embed: ``texts -> (n, d)`` L2-normalised rows (default all-MiniLM-L6-v2).
        spec: The examples file (default ``moves.yaml``).
        memo_size: Turn embeddings kept before the memo is cleared.
    """

    def __init__(self, acts: Any = None, embed: EmbedFn | None = None, spec: Path = MOVES_FILE,
                 memo_size: int = 20000) -> None:
        self._acts, self._embed = acts, embed
        self.spec = _load_spec(spec)
        self._memo: dict[str, np.ndarray] = {}
        self._memo_size = memo_size
        self._examples: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    @property
    def acts(self) -> Any:
        if self._acts is None:
            from rewards.acts.embedded_classifier import default_classifier

            self._acts = default_classifier()
        return self._acts

    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            self._embed = embed
        return np.asarray(self._embed(list(texts)), dtype=np.float32)

    def _example_vectors(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self._examples is None:
            # The spec's examples are fixed data: with the default model their embeddings are kept on disk.
            fixed = self._embed is None or self._embed is embed
            vectors = functools.partial(encode_cached, name="move-examples") if fixed else self._embed_texts
            layers = {layer: vectors(xs) for layer, xs in self.spec["layers"].items()}
            self._examples = (layers, vectors(self.spec["none"]))
        return self._examples

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)`` embeddings, memoised by text (a session re-reads its earlier turns every step)."""
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        new = sorted({t for t in texts if t not in self._memo})
        if new:
            if len(self._memo) + len(new) > self._memo_size:
                self._memo.clear()
            for text, vec in zip(new, self._embed_texts(new)):
                self._memo[text] = vec
        return np.stack([self._memo[t] for t in texts])

    def read(self, utterances: Sequence[str]) -> list[Move]:
        """The moves of a batch of therapist turns (one embedding pass and one act pass for the batch)."""
        texts = [" ".join(u.split()) for u in utterances]
        live = [i for i, t in enumerate(texts) if t]
        moves = [self._empty(texts[i]) for i in range(len(texts))]
        if not live:
            return moves
        layers, none = self._example_vectors()
        vecs = self.vectors([texts[i] for i in live])
        labels = self.acts.classify([texts[i] for i in live])
        bonus = float(self.spec["thresholds"]["act_bonus"])
        for row, i in enumerate(live):
            v, label = vecs[row], labels[row]
            leaning = ACT_LAYERS.get(label.type or "", ())
            fit = {layer: float((ex @ v).max()) + (bonus if layer in leaning else 0.0) for layer, ex in layers.items()}
            moves[i] = Move(read_cues(texts[i]), label.type or "oov", label.category or "oov", fit,
                            float((none @ v).max()), self._jargon(texts[i]), self.spec["thresholds"])
        return moves

    def _jargon(self, text: str) -> int:
        return len(self.spec["jargon_re"].findall(text))

    def _empty(self, text: str) -> Move:
        return Move(read_cues(text), "oov", "oov", {layer: 0.0 for layer in self.spec["layers"]}, 0.0, 0,
                    self.spec["thresholds"])


@functools.lru_cache(maxsize=4)
def _load_spec(path: Path) -> dict[str, Any]:
    spec = yaml.safe_load(Path(path).read_text())
    for key in ("layers", "none", "jargon", "thresholds"):
        if not spec.get(key):
            raise ValueError(f"{path}: needs a non-empty {key!r}")
    missing = {"fit", "margin", "max_jargon", "act_bonus"} - set(spec["thresholds"])
    if missing:
        raise ValueError(f"{path}: thresholds lacks {sorted(missing)}")
    spec["jargon_re"] = re.compile(r"\b(?:" + "|".join(spec["jargon"]) + r")\b", re.IGNORECASE)
    return spec


@functools.lru_cache(maxsize=1)
def default_reader() -> MoveReader:
    """One reader per process, shared by every patient: its embeddings are read-only caches."""
    return MoveReader()
