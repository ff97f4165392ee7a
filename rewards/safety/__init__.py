"""Safety checks for CBT sessions (after Moore et al., 2025): crisis detection in patient text and
a check of the therapist's reply.

* :class:`EmbeddedCrisisDetector` / :class:`EmbeddedReplyChecker`: deterministic CPU rules
  (``data/*.yaml``) plus an optional MiniLM nearest-exemplar backstop for detection.
* :class:`LLMCrisisDetector` / :class:`LLMReplyChecker`: the same outputs from a judge model.
* :class:`SafetyJudge`: the per-session gate the composite reward uses; :func:`violation` reads it.
* :func:`safety_file`: the ``cbtgym safety`` command's JSONL in/out.

Crisis type names are the profile schema's ``RISK_FLAGS``.
"""

from __future__ import annotations

from typing import Any

from .embedded import EmbeddedCrisisDetector, EmbeddedReplyChecker
from .files import read_safety_items, safety_file
from .findings import CRISIS_TYPES, REQUIREMENTS, SEVERITY, VIOLATIONS, CrisisFinding, ReplyCheck
from .judge import SafetyJudge, violation
from .llm import LLMCrisisDetector, LLMReplyChecker

__all__ = [
    "CRISIS_TYPES", "REQUIREMENTS", "SEVERITY", "VIOLATIONS", "CrisisFinding", "ReplyCheck",
    "EmbeddedCrisisDetector", "EmbeddedReplyChecker", "LLMCrisisDetector", "LLMReplyChecker",
    "SafetyJudge", "violation", "safety_file", "read_safety_items", "make_safety_checkers",
]


def make_safety_checkers(judge: str = "embedded", **kwargs: Any) -> tuple[Any, Any]:
    """``(detector, checker)`` for a ``--judge`` value.

    Args:
        judge: ``"embedded"`` (rules + MiniLM), ``"rules"`` (rules only), or a backend spec
            understood by :func:`cbtgym.backends.factory.make_backend` for the LLM versions.
        **kwargs: Passed to the LLM classes (``max_attempts``, ``cache``, ...).
    """
    if judge in ("embedded", "rules"):
        detector = EmbeddedCrisisDetector(use_embeddings=judge == "embedded")
        return detector, EmbeddedReplyChecker(detector=detector)
    from cbtgym.backends.factory import make_backend

    backend = make_backend(judge)
    detector = LLMCrisisDetector(backend, **kwargs)
    return detector, LLMReplyChecker(backend, detector=detector, **kwargs)
