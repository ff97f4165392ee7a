"""Which CBT-LLM parts an answer has, from an LLM judge: five booleans in one JSON reply.

The prompt (``prompts/structure.txt``) defines the parts and fences the question and the answer
as data. Under a backend with structured decoding the reply is held to :func:`structure_schema`.
Batching, retries and the cache go through :class:`cbtgym.llm.LLMCaller`; a reply that never
parses gives ``present=None`` and ``parse_failed=True``, never a guessed "no part".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cbtgym.backends.base import Backend
from cbtgym.llm import LLMCaller, extract_json, fence, render_prompt, text_field

from .parts import PARTS, StructureLabel, check_answers

PROMPT_FILE = Path(__file__).with_name("prompts") / "structure.txt"
#: Shown in place of the fenced question when there is none.
NO_QUESTION = "(none given)"

_TRUE = {"true", "yes", "present", "1"}
_FALSE = {"false", "no", "absent", "0"}


def structure_schema() -> dict[str, Any]:
    """JSON schema of the reply: a boolean per part, and a short ``rationale``."""
    return {
        "type": "object",
        "properties": {**{p: {"type": "boolean"} for p in PARTS}, "rationale": text_field()},
        "required": [*PARTS, "rationale"],
    }


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def parse_structure(text: str) -> tuple[dict[str, bool], str] | None:
    """``(present, rationale)`` from a reply, or ``None`` (a retry) unless every part has a true/false value."""
    obj = extract_json(text)
    if obj is None:
        return None
    present = {p: _boolean(obj.get(p)) for p in PARTS}
    if any(v is None for v in present.values()):
        return None
    return present, str(obj.get("rationale", "")).strip()  # type: ignore[return-value]


class LLMStructureJudge(LLMCaller):
    """Judges the five CBT-LLM parts of answers with an LLM.

    Args:
        backend: The judge model.
        **kwargs: :class:`~cbtgym.llm.generation.LLMCaller` options (``sampling``, default greedy with
            160 new tokens; ``max_attempts``, ``cache``, ``use_json_schema``, ``retry_temperature``).
    """

    name = "structure_llm"
    default_max_new_tokens = 160

    def __init__(self, backend: Backend, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.schema = structure_schema()

    def build_prompt(self, answer: str, question: str = "") -> list[dict[str, str]]:
        """The chat messages asking about one answer (question and answer fenced as data)."""
        prompt = render_prompt(PROMPT_FILE, answer=fence(answer, "answer", notice=False),
                               question=fence(question, "question", notice=False) if question.strip() else NO_QUESTION)
        return [{"role": "user", "content": prompt}]

    def judge(self, answers: Sequence[str], questions: Sequence[str] | None = None) -> list[StructureLabel]:
        """Label a batch of answers: one backend call per attempt for all of them.

        Args:
            answers: The answers to judge.
            questions: The question each answers (shown to the judge), or ``None``.

        Returns:
            One :class:`~rewards.structure.parts.StructureLabel` per answer; unparsed ones have ``present=None``.
        """
        answers, questions = check_answers(answers, questions, type(self).__name__)
        attempted = self.call([self.build_prompt(a, q) for a, q in zip(answers, questions)], parse_structure, self.schema)
        out = []
        for a in attempted:
            if a.ok:
                present, rationale = a.value  # type: ignore[misc]
                out.append(StructureLabel(present=present, rationale=rationale, raw=a.last_raw))
            else:
                out.append(StructureLabel(present=None, rationale=f"no parseable reply after {a.attempts} attempt(s)",
                                          raw=a.last_raw, parse_failed=True))
        return out

    def __repr__(self) -> str:
        return f"LLMStructureJudge(backend={self.backend.name!r})"
