"""The simulated patient's own verdict: its per-turn 0-100 satisfaction ratings, aggregated.

Patients rate each turn (``Turn.satisfaction``); like Witte et al.'s simulated clients they start
at :data:`~cbtgym.patients.base.SATISFACTION_START` (30). This judge reads those ratings, it asks no
model: ``final`` (the last rating), ``mean`` (of all ratings), ``delta`` (final minus the start)
and ``n_ratings``. A session without ratings is *unrated*: total ``None`` and every score
``None`` (never 0, which would be a real and very bad rating).

Not a TRL reward function: a bare ``(prompt, completion)`` carries no patient ratings.
"""

from __future__ import annotations

from typing import Literal, Sequence

from cbtgym.patients.base import SATISFACTION_START
from cbtgym.profiles.schema import PatientProfile
from cbtgym.transcript import Transcript

from .types import JudgeResult

Total = Literal["final", "mean", "delta"]
TOTALS: tuple[str, ...] = ("final", "mean", "delta")


class SatisfactionJudge:
    """Aggregates the patient's per-turn satisfaction ratings.

    Args:
        total: Which aggregate becomes ``JudgeResult.total``: ``"final"`` (default), ``"mean"``
            or ``"delta"`` (final minus ``start``).
        start: The rating every session starts from (Witte et al.: 30).
    """

    name = "satisfaction"

    def __init__(self, total: Total = "final", start: int = SATISFACTION_START) -> None:
        if total not in TOTALS:
            raise ValueError(f"SatisfactionJudge total must be one of {TOTALS} (got {total!r})")
        self.total = total
        self.start = start

    def score_one(self, transcript: Transcript) -> JudgeResult:
        ratings = transcript.satisfaction_series()
        if not ratings:
            return JudgeResult(
                total=None,
                scores={"final": None, "mean": None, "delta": None, "n_ratings": 0.0},
                rationale="unrated: no patient turn carries a satisfaction rating",
                meta={"judge": self.name, "start": self.start, "unrated": True},
            )
        bad = [r for r in ratings if not 0 <= r <= 100]
        if bad:
            raise ValueError(f"Turn.satisfaction must be within 0-100 (got {bad[:3]} in session {transcript.profile_id!r})")
        scores = {
            "final": float(ratings[-1]),
            "mean": float(sum(ratings) / len(ratings)),
            "delta": float(ratings[-1] - self.start),
            "n_ratings": float(len(ratings)),
        }
        return JudgeResult(
            total=scores[self.total],
            scores=scores,
            rationale=f"satisfaction {self.start} -> {ratings[-1]} over {len(ratings)} rating(s) (mean {scores['mean']:.1f})",
            meta={"judge": self.name, "start": self.start, "series": list(ratings), "total_is": self.total},
        )

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None = None) -> list[JudgeResult]:
        """One result per transcript; ``profiles`` is accepted for the common judge signature and unused."""
        return [self.score_one(t) for t in transcripts]
