"""What a distortion detector returns for one thought."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DistortionLabels:
    """The distortions found in one thought.

    Attributes:
        labels: The labels found, most likely first (``()``: no distortion); ``None`` when an LLM reply
            never parsed (``parse_failed``), which is never read as "no distortion".
        scores: ``label -> probability`` (embedded detector); ``None`` for an LLM detector.
        rationale: A short reason (the LLM's sentence, or the top scores).
        raw: The LLM's last reply, when there was one.
        parse_failed: No usable reply after every attempt.
        meta: Backend, attempts, cache hits.
    """

    labels: tuple[str, ...] | None
    scores: dict[str, float] | None = None
    rationale: str = ""
    raw: str | None = None
    parse_failed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
