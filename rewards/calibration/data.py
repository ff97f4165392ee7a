"""The human-labelled JSONL files ``cbtgym calibrate`` reads, one format per kind, validated line by line.

* ``acts``: ``{"text": str, "category": str, "type": str (optional), "context": str (optional)}``;
  ``category`` may be left out when ``type`` is given (it follows from the type).
* ``crisis``: ``{"text": str, "crisis": bool, "types": [crisis types] (optional)}``.
* ``reply_check``: ``{"stimulus": str, "reply": str, "appropriate": bool}``.
* ``distortions``: ``{"text": str, "labels": [distortion labels]}`` (``[]``: no distortion); see
  :mod:`rewards.distortions.data`.
* ``ctrs``: ``{"dialogue": [{"role": "therapist"|"patient", "text": str}, ...] or "Therapist: ...\\nPatient: ...",
  "item": a CTRS item key, "rating": 0-6}``: one clinician rating of one item of one session.

Every error names the file, the line, the field and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from cbtgym.jsonl import iter_jsonl_objects
from cbtgym.transcript import SPEAKERS, Transcript

from ..acts.data import optional_text, required_text
from ..acts.taxonomy import CATEGORIES, act_types, category_of
from ..distortions.data import read_thought
from ..safety.findings import CRISIS_TYPES

KINDS: tuple[str, ...] = ("acts", "crisis", "reply_check", "distortions", "ctrs")
#: The rating range of the ``ctrs`` kind (the CTRS's own 0-6).
RATING_MIN, RATING_MAX = 0, 6
#: Which field gives a file's kind away (checked in this order) when ``--kind`` is not given.
_KIND_FIELDS: tuple[tuple[str, str], ...] = (
    ("rating", "ctrs"), ("dialogue", "ctrs"), ("stimulus", "reply_check"), ("appropriate", "reply_check"),
    ("crisis", "crisis"), ("labels", "distortions"), ("category", "acts"), ("type", "acts"),
)
_TURN_LABEL = re.compile(r"^\s*(therapist|patient)\s*:\s?(.*)$", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True)
class ActItem:
    """A therapist utterance with its human act category and, when given, its act type."""

    text: str
    category: str
    type: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class CrisisItem:
    """A patient text with the human verdict on crisis and, when given, the crisis types."""

    text: str
    crisis: bool
    types: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReplyItem:
    """A patient stimulus, a therapist reply and whether a person found the reply appropriate."""

    stimulus: str
    reply: str
    appropriate: bool


@dataclass(frozen=True)
class RatingItem:
    """A clinician's 0-6 rating of one CTRS item of one session."""

    dialogue: Transcript
    item: str
    rating: int

    @property
    def session_key(self) -> str:
        """Identifies the session, so that lines rating other items of it are judged together."""
        return self.dialogue.render()


def _bool(obj: dict[str, Any], key: str, where: str) -> bool:
    value = obj.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: field '{key}' must be true or false (got {value!r})")
    return value


def _act(obj: dict[str, Any], where: str) -> ActItem:
    text = required_text(obj, "text", where)
    type_ = optional_text(obj, "type", where)
    category = optional_text(obj, "category", where)
    if type_ is not None and type_ not in act_types():
        raise ValueError(f"{where}: field 'type' is {type_!r}, not an act type; use one of {', '.join(act_types())} or leave it out")
    if category is None and type_ is None:
        raise ValueError(f"{where}: give field 'category' (one of {', '.join(CATEGORIES)}) or field 'type'")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"{where}: field 'category' is {category!r}; use one of {', '.join(CATEGORIES)}")
    if type_ is not None and category is not None and category_of(type_) != category:
        raise ValueError(f"{where}: type {type_!r} belongs to category {category_of(type_)!r}, not {category!r}; fix either field")
    return ActItem(text, category or category_of(type_), type_, optional_text(obj, "context", where))  # type: ignore[arg-type]


def _crisis(obj: dict[str, Any], where: str) -> CrisisItem:
    text = required_text(obj, "text", where)
    crisis = _bool(obj, "crisis", where)
    types = obj.get("types")
    if types is None:
        return CrisisItem(text, crisis)
    if not isinstance(types, list) or any(t not in CRISIS_TYPES for t in types):
        raise ValueError(f"{where}: field 'types' must be a list of crisis types ({', '.join(CRISIS_TYPES)}) or absent (got {types!r})")
    if bool(types) != crisis:
        raise ValueError(f"{where}: 'crisis' is {str(crisis).lower()} but 'types' is {types!r}; a crisis needs at least one type, "
                         "a non-crisis none")
    return CrisisItem(text, crisis, tuple(types))


def _reply(obj: dict[str, Any], where: str) -> ReplyItem:
    return ReplyItem(required_text(obj, "stimulus", where), required_text(obj, "reply", where), _bool(obj, "appropriate", where))


def parse_dialogue(value: Any, where: str) -> Transcript:
    """A ``dialogue`` field (a list of ``{"role", "text"}`` turns or a ``Therapist: ...`` string) as a transcript."""
    t = Transcript(profile_id="calibration", attitude="active")
    if isinstance(value, str):
        for line in value.splitlines():
            m = _TURN_LABEL.match(line)
            if m:
                t.add(m.group(1).lower(), m.group(2).strip())  # type: ignore[arg-type]
            elif line.strip() and t.turns:  # a turn that runs over several lines
                t.turns[-1].text += " " + line.strip()
            elif line.strip():
                raise ValueError(f"{where}: field 'dialogue' must start with a 'Therapist:' or 'Patient:' line (got {line[:40]!r})")
    elif isinstance(value, list):
        for i, turn in enumerate(value):
            role = turn.get("role") if isinstance(turn, dict) else None
            text = turn.get("text") if isinstance(turn, dict) else None
            if role not in SPEAKERS or not isinstance(text, str):
                raise ValueError(f"{where}: dialogue[{i}] must be {{\"role\": \"therapist\" or \"patient\", \"text\": \"...\"}} (got {turn!r})")
            t.add(role, text)
    else:
        raise ValueError(f"{where}: field 'dialogue' must be a list of turns or a 'Therapist: ...' string (got {type(value).__name__})")
    if not t.therapist_turns:
        raise ValueError(f"{where}: field 'dialogue' has no therapist turn; the CTRS rates the therapist")
    return t


def _rating(obj: dict[str, Any], where: str, item_keys: Sequence[str]) -> RatingItem:
    if "dialogue" not in obj:
        raise ValueError(f"{where}: field 'dialogue' is missing; give the session as a list of turns or a 'Therapist: ...' string")
    dialogue = parse_dialogue(obj["dialogue"], where)
    item = obj.get("item")
    if item not in item_keys:
        raise ValueError(f"{where}: field 'item' is {item!r}; use a CTRS item key: {', '.join(item_keys)}")
    rating = obj.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, (int, float)) or rating != int(rating) or not RATING_MIN <= rating <= RATING_MAX:
        raise ValueError(f"{where}: field 'rating' must be a whole number from {RATING_MIN} to {RATING_MAX} (got {rating!r})")
    return RatingItem(dialogue, item, int(rating))


def infer_kind(path: str | Path) -> str:
    """The kind of a calibration file, from the fields of its first line."""
    for n, obj in iter_jsonl_objects(path):
        for key, kind in _KIND_FIELDS:
            if key in obj:
                return kind
        raise ValueError(f"{path}:{n}: cannot tell the kind of this file from its fields {sorted(obj)}; pass --kind (one of {', '.join(KINDS)})")
    raise ValueError(f"{path}: the file has no lines")


def load_items(kind: str, path: str | Path) -> list[Any]:
    """Every line of a calibration file of ``kind`` as an item, validated.

    Raises:
        ValueError: For an unknown kind, an empty file or a bad line (naming the file, line, field and fix).
        FileNotFoundError: When the file does not exist.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown calibration kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "ctrs":
        from ..ctrs import load_ctrs

        keys = [it.key for it in load_ctrs()[0]]
        read = lambda obj, where: _rating(obj, where, keys)  # noqa: E731
    else:
        read = {"acts": _act, "crisis": _crisis, "reply_check": _reply, "distortions": read_thought}[kind]
    items = [read(obj, f"{path}:{n}") for n, obj in iter_jsonl_objects(path)]
    if not items:
        raise ValueError(f"{path}: the file has no lines; it needs at least one labelled {kind} line")
    return items


def spread(items: Sequence[T], limit: int | None) -> list[T]:
    """``limit`` items evenly spaced over ``items`` (all when ``limit`` is None or not smaller).

    Labelled files are often grouped by label, so the first N lines would miss most labels.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (got {limit})")
    if not limit or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]
