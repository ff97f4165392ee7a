"""The reward seam of the environment: a batched function over sessions.

The environment does not judge; it calls whatever reward function it was given,
once per step for all sessions it steps (so the vector env makes one judge call per
step, not N). Judges in the top-level ``rewards`` package implement this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from ..profiles.schema import PatientProfile
from ..transcript import Transcript


@dataclass
class StepReward:
    """The reward for one step of one session.

    Attributes:
        value: The scalar given to the agent (``None`` is not allowed here: a reward
            function decides how a judge failure maps to a number and says so in ``info``).
        components: Named parts, logged in ``info["reward_components"]``.
        info: Anything else (judge failures, safety gate, raw results).
    """

    value: float
    components: dict[str, float | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def judge_failed(components: Mapping[str, Any]) -> bool:
    """Whether a step reward's ``components`` report a failed judge (``judge_failures`` > 0).

    A reward that excludes a failed judge still returns a number (the sum of the others; see
    :class:`rewards.composite.CompositeReward`), so a caller that must not learn from a failure
    (candidate scoring) asks this instead of reading the value. Rewards that never fail (the
    rubric) report no ``judge_failures`` and never count as failed.
    """
    return bool(components.get("judge_failures"))


class SessionReward(Protocol):
    def __call__(
        self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile], done: Sequence[bool]
    ) -> list[StepReward]: ...


class PlaceholderReward:
    """Zero reward, clearly labelled: for wiring an env before choosing a judge. Not a judge."""

    def __call__(self, transcripts, profiles, done) -> list[StepReward]:
        return [StepReward(0.0, {"placeholder": 0.0}, {"placeholder_reward": True}) for _ in transcripts]
