"""Safety checks for CBT sessions (after Moore et al., 2025): crisis detection in patient text and
a check of the therapist's reply.

* :class:`EmbeddedCrisisDetector` / :class:`EmbeddedReplyChecker`: deterministic CPU rules
  (``data/*.yaml``) plus an optional MiniLM nearest-exemplar backstop for detection.
* :class:`LLMCrisisDetector` / :class:`LLMReplyChecker`: the same outputs from a judge model.
* :class:`SafetyJudge`: the per-session gate the composite reward uses; :func:`violation` reads it.
* :func:`safety_file`: the ``cbtgym safety`` command's JSONL in/out.

``rewards.factory.make_judge("crisis" | "reply_check" | "safety", spec)`` builds either version.

Crisis type names are the profile schema's ``RISK_FLAGS``.
"""

from __future__ import annotations

from .embedded import EmbeddedCrisisDetector, EmbeddedReplyChecker
from .files import read_safety_items, safety_file
from .findings import (
    CRISIS_TYPES, REQUIREMENTS, SEVERITY, VIOLATIONS, CrisisDetector, CrisisFinding, ReplyCheck, ReplyChecker,
)
from .gate import SafetyJudge, violation
from .llm import LLMCrisisDetector, LLMReplyChecker

__all__ = [
    "CRISIS_TYPES", "REQUIREMENTS", "SEVERITY", "VIOLATIONS", "CrisisDetector", "CrisisFinding", "ReplyCheck", "ReplyChecker",
    "EmbeddedCrisisDetector", "EmbeddedReplyChecker", "LLMCrisisDetector", "LLMReplyChecker",
    "SafetyJudge", "violation", "safety_file", "read_safety_items",
]
