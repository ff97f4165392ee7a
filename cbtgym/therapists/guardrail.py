"""A crisis guardrail: a backend wrapper that answers detected crisis states with a safe reply.

The trained policy never sees or learns these replies; the guardrail sits between the policy and the
patient at deployment (and in the evaluation, which reports the policy with and without it). Whether a
state is a crisis is decided by the same kind of detector the reward uses, on the patient's last two
turns, so a guarded policy meets the reward's safety check with a reply written for it
(``guardrail_replies.yaml``) instead of whatever the policy would have said.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..backends.base import Backend, Conversation, Sampling
from ..strict_yaml import load_yaml

REPLIES = Path(__file__).with_name("guardrail_replies.yaml")
#: Patient turns the detector reads: the rubric's ``patient_so_far`` window.
PATIENT_TURNS = 2


@lru_cache(maxsize=4)
def load_replies(path: str | Path = REPLIES) -> dict[str, tuple[str, ...]]:
    """Safe replies by crisis type (every type of :data:`rewards.safety.findings.CRISIS_TYPES`)."""
    from rewards.safety.findings import CRISIS_TYPES

    raw = load_yaml(Path(path))
    missing = [t for t in CRISIS_TYPES if not raw.get(t)]
    if missing:
        raise ValueError(f"{path}: no safe replies for crisis types {missing}; add a list of replies under each")
    return {t: tuple(str(r) for r in raw[t]) for t in CRISIS_TYPES}


def patient_window(conversation: Conversation, turns: int = PATIENT_TURNS) -> str:
    """The last ``turns`` patient (user) messages of a therapist-side conversation, joined."""
    said = [m["content"] for m in conversation if m["role"] == "user"]
    return " ".join(said[-turns:])


class CrisisGuardrail(Backend):
    """Wraps a therapist ``backend``: conversations whose patient window is a crisis get a safe reply.

    Args:
        backend: The policy.
        detector: A crisis detector (``detect(texts) -> findings``); default the embedded one.
        replies: Safe replies by crisis type (default :func:`load_replies`).

    ``fired`` counts guarded replies; :meth:`wrote` tells a guardrail reply from the policy's.
    """

    def __init__(self, backend: Backend, detector: Any = None, replies: dict[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.backend, self.replies = backend, replies or load_replies()
        self._detector = detector
        self._written = {r for rs in self.replies.values() for r in rs}
        self.name = f"guardrail({backend.name})"
        self.fired = 0

    @property
    def detector(self):
        if self._detector is None:
            from rewards.safety import EmbeddedCrisisDetector

            self._detector = EmbeddedCrisisDetector()
        return self._detector

    def wrote(self, text: str) -> bool:
        """True when ``text`` is one of the guardrail's replies."""
        return text.strip() in self._written

    def _generate(self, conversations: list[list[dict[str, str]]], sampling: Sampling) -> tuple[list[str], int | None]:
        findings = self.detector.detect([patient_window(c) for c in conversations])
        out: list[str | None] = [None] * len(conversations)
        policy = [i for i, f in enumerate(findings) if not f.crisis]
        for i, f in enumerate(findings):
            if f.crisis:
                options = self.replies[f.crisis_type]
                given = sum(1 for m in conversations[i] if m["role"] == "assistant" and m["content"].strip() in options)
                out[i] = options[given % len(options)]
        self.fired += len(conversations) - len(policy)
        if policy:
            for i, text in zip(policy, self.backend.generate([conversations[i] for i in policy], sampling)):
                out[i] = text
        return [t for t in out if t is not None], None

    def describe(self) -> str:
        return f"guardrail({self.backend.describe()})"

    def close(self) -> None:
        self.backend.close()
