"""What an act classifier returns, and what every act classifier shares.

Both classifiers (embedded and LLM) answer ``classify(texts, contexts) -> list[ActLabel]``;
:class:`ActClassifier` turns those labels into :class:`~rewards.types.JudgeResult` for the act
judge, so the two never differ in how a label is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..types import ItemResult, JudgeResult
from .taxonomy import CATEGORIES, category_of


@dataclass
class ActLabel(ItemResult):
    """The act label of one therapist utterance.

    Attributes:
        type: One of the 14 labels (13 act types and ``oov``), or ``None`` when the classifier
            could not decide (an LLM reply that never parsed); never a guessed ``oov``.
        category: The type's category (one of :data:`~rewards.acts.taxonomy.CATEGORIES`), or ``None``.
        confidence: Probability of ``type`` (embedded classifier), 1.0 for an LLM label (the
            model gives no probability), ``None`` when unlabelled.
        type_scores: Probability of every type (embedded); one-hot for an LLM label; empty when unlabelled.
        category_scores: Probability of every category (the sum of its types' probabilities).
        rationale: Why (the LLM's sentence, or a summary of the top scores).
        raw: The LLM's raw reply (last attempt), empty for the embedded classifier.
        parse_failed: True when the LLM's reply could not be parsed after retries.
        meta: Attempts, backend name and the like.
    """

    type: str | None
    category: str | None
    confidence: float | None
    type_scores: dict[str, float] = field(default_factory=dict)
    category_scores: dict[str, float] = field(default_factory=dict)
    rationale: str = ""
    raw: str = ""
    parse_failed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def one_hot(cls, type_name: str, types: Sequence[str], **kwargs: Any) -> "ActLabel":
        """A certain label (an LLM's answer): probability 1 on ``type_name``."""
        category = category_of(type_name)
        return cls(
            type=type_name,
            category=category,
            confidence=1.0,
            type_scores={t: float(t == type_name) for t in types},
            category_scores={c: float(c == category) for c in CATEGORIES},
            **kwargs,
        )

    def verdict(self) -> str | None:
        return self.type

    def to_judge_result(self, judge: str) -> JudgeResult:
        """This label as a judge result.

        ``total`` is the confidence, ``scores`` the probability of each category (one-hot for an
        LLM label; all ``None`` when unlabelled), and ``meta`` holds the type and category.
        """
        if self.type is None:
            return JudgeResult(
                total=None,
                scores={c: None for c in CATEGORIES},
                rationale=self.rationale,
                raw=self.raw,
                parse_failed=True,
                meta={"judge": judge, "type": None, "category": None, **self.meta},
            )
        return JudgeResult(
            total=self.confidence,
            scores={c: self.category_scores.get(c, 0.0) for c in CATEGORIES},
            rationale=self.rationale,
            raw=self.raw,
            parse_failed=self.parse_failed,
            meta={"judge": judge, "type": self.type, "category": self.category, "type_scores": dict(self.type_scores), **self.meta},
        )


def check_batch(texts: Sequence[str], contexts: Sequence[str | None] | None, who: str) -> tuple[list[str], list[str]]:
    """Validate a ``classify`` batch: texts as a list, one context (or ``None``) per text."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{who}.classify takes a list of utterances; wrap a single one in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{who}.classify: texts[{bad[0]}] must be a string (got {type(texts[bad[0]]).__name__})")
    if contexts is None:
        return texts, [""] * len(texts)
    if isinstance(contexts, (str, bytes)):
        raise TypeError(f"{who}.classify: contexts must be a list (one patient utterance or None per text)")
    contexts = list(contexts)
    if len(contexts) != len(texts):
        raise ValueError(f"{who}.classify got {len(contexts)} contexts for {len(texts)} texts; pass one per text (None allowed)")
    return texts, ["" if c is None else str(c) for c in contexts]


class ActClassifier:
    """Base of the act classifiers: subclasses implement :meth:`classify`."""

    name = "acts"

    def classify(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> list[ActLabel]:
        """Label a batch of therapist utterances.

        Args:
            texts: The therapist utterances.
            contexts: Optionally, for each utterance, the patient utterance before it (``None`` for none).

        Returns:
            One :class:`ActLabel` per utterance, in order.
        """
        raise NotImplementedError

    def judge(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> list[JudgeResult]:
        """:meth:`classify` as :class:`~rewards.types.JudgeResult` (scores by category); see :meth:`ActLabel.to_judge_result`."""
        return [label.to_judge_result(self.name) for label in self.classify(texts, contexts)]
