"""The five parts of a CBT-LLM answer and the label a structure judge gives one answer.

CBT-LLM (Na 2024) asks its model for answers in five parts: validation and empathy, the key
thought or belief behind the problem, a challenge or reflection of that thought, a concrete
strategy, and encouragement. A judge says which parts an answer contains; ``count`` (0-5) is the
number present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

#: The parts in the order CBT-LLM writes them.
PARTS: tuple[str, ...] = ("validation", "key_thought", "challenge", "strategy", "encouragement")

#: Each part as the report names it.
PART_TITLES: dict[str, str] = {
    "validation": "validation and empathy",
    "key_thought": "key thought or belief",
    "challenge": "challenge or reflection",
    "strategy": "strategy",
    "encouragement": "encouragement",
}


@dataclass
class StructureLabel:
    """Which of the five parts one answer contains.

    Attributes:
        present: ``part -> bool`` for every part of :data:`PARTS`; ``None`` when the judge gave no
            usable answer (an LLM reply that never parsed).
        scores: ``part -> score`` in [0, 1] where the judge has one (the embedded judge's best
            sentence probability); empty otherwise.
        evidence: ``part -> the sentence`` that showed it (embedded judge).
        rationale: A short reason or the failure message.
        raw: The LLM's last reply, when there is one.
        parse_failed: The LLM judge's reply never parsed.
    """

    present: dict[str, bool] | None
    scores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, str] = field(default_factory=dict)
    rationale: str = ""
    raw: str = ""
    parse_failed: bool = False

    @property
    def count(self) -> int | None:
        """How many of the five parts are present (0-5); ``None`` when unparsed."""
        return None if self.present is None else sum(self.present.values())

    @property
    def parts(self) -> list[str] | None:
        """The present parts in :data:`PARTS` order; ``None`` when unparsed."""
        return None if self.present is None else [p for p in PARTS if self.present[p]]


def check_answers(answers: Sequence[str], questions: Sequence[str] | None, who: str) -> tuple[list[str], list[str]]:
    """``(answers, questions)`` as lists of equal length (no questions: empty strings)."""
    if isinstance(answers, str):
        raise TypeError(f"{who}.judge takes a list of answers; wrap a single answer in a list")
    answers = [str(a) for a in answers]
    if questions is None:
        return answers, [""] * len(answers)
    questions = [str(q or "") for q in questions]
    if len(questions) != len(answers):
        raise ValueError(f"{who}.judge got {len(questions)} questions for {len(answers)} answers; pass one per answer or none")
    return answers, questions


def load_labelled_answers(path: str | Path) -> list[dict[str, Any]]:
    """Answers with gold part labels from a JSONL file: ``{"id", "question", "answer", "parts": [...]}`` per line.

    Raises:
        ValueError: Naming the line and the field when an entry is malformed or names an unknown part.
    """
    from cbtgym.jsonl import iter_jsonl_objects

    path = Path(path)
    items, seen = [], set()
    for n, row in iter_jsonl_objects(path):
        for key in ("id", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{path}:{n}: field '{key}' is missing or empty")
        parts = row.get("parts")
        if not isinstance(parts, list) or any(p not in PARTS for p in parts):
            raise ValueError(f"{path}:{n}: field 'parts' must be a list of {list(PARTS)} (got {parts!r})")
        if row["id"] in seen:
            raise ValueError(f"{path}:{n}: id {row['id']!r} appears twice; ids must be unique")
        seen.add(row["id"])
        items.append({"id": row["id"], "question": str(row.get("question", "")), "answer": row["answer"], "parts": parts})
    if not items:
        raise ValueError(f"{path}: no labelled answers")
    return items
