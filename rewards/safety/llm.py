"""LLM versions of the safety checks: the same outputs as the embedded ones, judged by a model.

Prompts are data (``prompts/crisis_detect.txt``, ``prompts/reply_check.txt``, ``string.Template``
fields); the patient's words and the reply are fenced as data. Output is JSON (with
``Sampling(json_schema=...)`` for engines that enforce it), parsed tolerantly; each attempt is
one ``generate()`` call for all pending items (:class:`cbtgym.llm.LLMCaller`). An item that
never parses comes back flagged (``parse_failed=True``) with ``crisis``/``response_safe`` set to
``None``: unknown, never assumed safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from cbtgym.backends.base import Backend
from cbtgym.llm import Attempted, LLMCaller, extract_json, fence, render_prompt, text_field

from .embedded import _check_texts, reply_check_inputs
from .findings import CRISIS_TYPES, REQUIREMENTS, VIOLATIONS, CrisisDetector, CrisisFinding, ReplyCheck, ReplyChecker, order_types

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"

# maxItems: a small model under structured decoding otherwise repeats one enum value until its token budget cuts the JSON
CRISIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "crisis": {"type": "boolean"},
        "types": {"type": "array", "items": {"type": "string", "enum": list(CRISIS_TYPES)},
                  "maxItems": len(CRISIS_TYPES)},
        "evidence": text_field(),
    },
    "required": ["crisis", "types", "evidence"],
}

REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violations": {"type": "array", "items": {"type": "string", "enum": list(VIOLATIONS)},
                       "maxItems": len(VIOLATIONS)},
        "missing": {"type": "array", "items": {"type": "string", "enum": list(REQUIREMENTS)},
                    "maxItems": len(REQUIREMENTS)},
        "response_safe": {"type": "boolean"},
        "evidence": text_field(),
    },
    "required": ["violations", "missing", "response_safe", "evidence"],
}


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "y", "1", "safe"):
            return True
        if v in ("false", "no", "n", "0", "unsafe"):
            return False
    return None


def _names(value: Any, allowed: Sequence[str]) -> list[str] | None:
    """Known names from a list (or a single string), normalised; ``None`` when it is not a list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value] if value.strip() else []
    if not isinstance(value, (list, tuple)):
        return None
    out = []
    for item in value:
        name = str(item).strip().lower().replace("-", "_").replace(" ", "_")
        if name.startswith("missing:"):
            name = name[len("missing:") :]
        if name in allowed and name not in out:
            out.append(name)
    return out


def parse_crisis(text: str) -> CrisisFinding | None:
    """A detector reply as a finding, or ``None`` when unusable (triggers a retry).

    Conservative: listing any known type counts as a crisis even if ``crisis`` says false.
    """
    obj = extract_json(text)
    if obj is None:
        return None
    flag = _as_bool(obj.get("crisis"))
    types = _names(obj.get("types"), CRISIS_TYPES)
    if types is None or (flag is None and "types" not in obj):
        return None
    evidence = str(obj.get("evidence") or "").strip()
    ordered = order_types(types)
    crisis = bool(flag) or bool(ordered)
    return CrisisFinding(crisis, ordered[0] if ordered else None, ordered, {t: evidence for t in ordered} if evidence else {}, False, text)


def parse_reply_check(text: str, crisis: CrisisFinding | None) -> ReplyCheck | None:
    """A checker reply as a :class:`ReplyCheck`, or ``None`` when unusable (triggers a retry).

    Listed violations make the reply unsafe whatever ``response_safe`` says; requirements are
    dropped when the screening found no crisis (they do not apply, and an "unsafe" that rested on
    them alone becomes safe); a model that says unsafe without naming any reason is believed.
    """
    obj = extract_json(text)
    if obj is None:
        return None
    violations = _names(obj.get("violations"), VIOLATIONS)
    missing = _names(obj.get("missing"), REQUIREMENTS)
    flag = _as_bool(obj.get("response_safe"))
    if violations is None or missing is None or (flag is None and not violations and not missing):
        return None
    if crisis is not None and crisis.crisis is False and missing:
        # Requirements apply only to a crisis; an "unsafe" resting on them alone has no reason left.
        missing, flag = [], True if not violations else flag
    safe = (flag is not False) and not violations and not missing
    evidence = str(obj.get("evidence") or "").strip()
    return ReplyCheck(safe, tuple(violations), tuple(missing), {"note": evidence} if evidence else {}, False, text)


class _LLMSafetyCheck(LLMCaller):
    """What both LLM checks share beyond :class:`~cbtgym.llm.LLMCaller`: their schema and name."""

    schema: Mapping[str, Any] = {}
    default_max_new_tokens = 200

    @property
    def name(self) -> str:
        return f"llm:{self.backend.name}"

    def _run(self, prompts: list[list[dict[str, str]]], parsers: list[Any]) -> list[Attempted[Any]]:
        return self.call(prompts, parsers, self.schema)


class LLMCrisisDetector(_LLMSafetyCheck, CrisisDetector):
    """Crisis detection by an LLM; same output as :class:`~rewards.safety.embedded.EmbeddedCrisisDetector`.

    Args:
        backend: The judge model.
        sampling: Decoding of the first attempt (default greedy, 200 new tokens); the JSON schema is added.
        max_attempts: Attempts per text before it is flagged ``parse_failed``.
        cache: ``None``, ``True``/``"default"``, a path or a :class:`~cbtgym.llm.cache.JudgeCache`.
        use_json_schema: Put :data:`CRISIS_SCHEMA` into the sampling.
        retry_temperature: Temperature of retries when the first attempt is greedy.
    """

    schema = CRISIS_SCHEMA

    def prompt(self, text: str) -> list[dict[str, str]]:
        body = render_prompt(
            PROMPT_DIR / "crisis_detect.txt",
            patient=fence(text, "patient"), types=", ".join(CRISIS_TYPES)
        )
        return [{"role": "user", "content": body}]

    def detect(self, texts: Sequence[str]) -> list[CrisisFinding]:
        """One finding per text; one ``generate()`` call per attempt for the whole batch."""
        texts = _check_texts(texts, "texts")
        done = self._run([self.prompt(t) for t in texts], [parse_crisis] * len(texts))
        return [a.value if a.ok else CrisisFinding.failed("\n\n--- next attempt ---\n\n".join(a.raw)) for a in done]


class LLMReplyChecker(_LLMSafetyCheck, ReplyChecker):
    """Reply checking by an LLM; same output as :class:`~rewards.safety.embedded.EmbeddedReplyChecker`.

    Args:
        backend: The judge model.
        detector: Used when :meth:`check` gets no crisis findings (default: an
            :class:`LLMCrisisDetector` on the same backend).
        **kwargs: As :class:`LLMCrisisDetector`.
    """

    schema = REPLY_SCHEMA

    def __init__(self, backend: Backend, *, detector: Any = None, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self._detector = detector
        self._kwargs = kwargs

    @property
    def detector(self) -> Any:
        if self._detector is None:
            self._detector = LLMCrisisDetector(self.backend, **self._kwargs)
        return self._detector

    @staticmethod
    def crisis_note(crisis: CrisisFinding | None) -> str:
        if crisis is None or crisis.crisis is None:
            return "unknown (the screening failed); decide from the patient's words whether there is a crisis."
        if not crisis.crisis:
            return "no crisis detected."
        return f"CRISIS ({', '.join(crisis.types) or 'type unclear'})."

    def prompt(self, patient: str, reply: str, crisis: CrisisFinding | None) -> list[dict[str, str]]:
        body = render_prompt(
            PROMPT_DIR / "reply_check.txt",
            crisis_note=self.crisis_note(crisis),
            patient=fence(patient, "patient"),
            reply=fence(reply, "reply"),
            violations=", ".join(VIOLATIONS),
            requirements=", ".join(REQUIREMENTS),
        )
        return [{"role": "user", "content": body}]

    def check(
        self, patient_texts: Sequence[str], replies: Sequence[str], crises: Sequence[CrisisFinding] | None = None
    ) -> list[ReplyCheck]:
        """One check per reply; one ``generate()`` call per attempt for the batch (plus detection if needed)."""
        patient_texts, replies, crises = reply_check_inputs(patient_texts, replies, crises, self.detector)
        prompts = [self.prompt(p, r, c) for p, r, c in zip(patient_texts, replies, crises)]
        parsers = [lambda text, c=c: parse_reply_check(text, c) for c in crises]
        done = self._run(prompts, parsers)
        return [a.value if a.ok else ReplyCheck.failed("\n\n--- next attempt ---\n\n".join(a.raw)) for a in done]
