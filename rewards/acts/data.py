"""The labelled therapist utterances written for this project.

``data/examples.jsonl`` trains the embedded classifier (>= 15 per type); ``data/eval.jsonl``
is a separate, held-out set for measuring both classifiers (``bench/act_labels.py``). Each line:
``{"text": ..., "type": ..., "context": optional patient utterance before it}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbtgym.jsonl import iter_jsonl_objects

from .taxonomy import act_types, category_of

DATA_DIR = Path(__file__).with_name("data")
EXAMPLES_FILE = DATA_DIR / "examples.jsonl"
EVAL_FILE = DATA_DIR / "eval.jsonl"


@dataclass(frozen=True)
class LabelledUtterance:
    """One therapist utterance with its act type and, optionally, the patient's words before it."""

    text: str
    type: str
    context: str | None = None

    @property
    def category(self) -> str:
        return category_of(self.type)


def optional_text(obj: dict[str, Any], key: str, where: str) -> str | None:
    """``obj[key]`` when it is a string, ``None`` when absent or null; an error naming the field otherwise."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}: field '{key}' must be a string or absent (got {type(value).__name__})")
    return value


def required_text(obj: dict[str, Any], key: str, where: str) -> str:
    """``obj[key]`` as a non-empty string; an error naming the field otherwise."""
    value = optional_text(obj, key, where)
    if value is None or not value.strip():
        raise ValueError(f"{where}: field '{key}' is missing or empty; every line needs a non-empty \"{key}\" string")
    return value


def load_labelled(path: str | Path) -> list[LabelledUtterance]:
    """Read a labelled JSONL file (``text``, ``type``, optional ``context``), validating every line.

    Raises:
        ValueError: For a bad line; the message names the file, the line number and the field.
    """
    labels = act_types()
    out = []
    for n, obj in iter_jsonl_objects(path):
        where = f"{path}:{n}"
        text = required_text(obj, "text", where)
        label = required_text(obj, "type", where)
        if label not in labels:
            raise ValueError(f"{where}: field 'type' is {label!r}, not an act type; use one of {', '.join(labels)}")
        out.append(LabelledUtterance(text, label, optional_text(obj, "context", where)))
    return out


def load_examples() -> list[LabelledUtterance]:
    """The embedded classifier's training utterances."""
    return load_labelled(EXAMPLES_FILE)


def load_eval() -> list[LabelledUtterance]:
    """The held-out evaluation utterances."""
    return load_labelled(EVAL_FILE)
