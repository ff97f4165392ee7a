"""The result family of every judge: :class:`JudgeResult` per session, :class:`ItemResult` per utterance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class JudgeResult:
    """What a judge says about one transcript (or one utterance).

    Attributes:
        total: The judge's overall score, or ``None`` when it could not score (parse
            failure after retries, or nothing applicable). Never a silent 0.
        scores: Named sub-scores; a value of ``None`` means "not applicable" (e.g. CTRS
            Homework in a 4-round session), which is different from a low score.
        rationale: Human-readable justification (per-item justifications joined, etc.).
        raw: The judge model's raw text(s), for audit.
        parse_failed: True when the judge's output could not be parsed after retries.
        meta: Anything else worth logging (attempts, cache hit, labels, turn indices).
    """

    total: float | None
    scores: dict[str, float | None] = field(default_factory=dict)
    rationale: str = ""
    raw: str = ""
    parse_failed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.total is not None and not self.parse_failed

    def log_dict(self, prefix: str) -> dict[str, float]:
        """Flat ``{prefix/total, prefix/<score>, prefix/parse_failed}`` numbers for W&B/TensorBoard."""
        out: dict[str, float] = {f"{prefix}/parse_failed": float(self.parse_failed)}
        if self.total is not None:
            out[f"{prefix}/total"] = float(self.total)
        for k, v in self.scores.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[f"{prefix}/{k}"] = float(v)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ItemResult:
    """Base of the per-utterance results (act label, crisis finding, reply check).

    Utterance judges keep item-shaped inputs and their own fields, but every result says whether
    it was decided (:attr:`ok`), keeps the raw model text and the ``parse_failed`` flag, and turns
    into a :class:`JudgeResult` the same way, so reports and logs treat all judges alike.
    """

    raw: str
    parse_failed: bool

    @property
    def ok(self) -> bool:
        """Decided: parsed, with a verdict (``None`` verdicts mean "could not tell")."""
        return not self.parse_failed and self.verdict() is not None

    def verdict(self) -> Any:
        """The result's decision (label, crisis flag, safe flag), ``None`` when undecided."""
        raise NotImplementedError

    def to_judge_result(self, judge: str) -> JudgeResult:
        """This result as a :class:`JudgeResult` (``total`` ``None`` when undecided)."""
        raise NotImplementedError
