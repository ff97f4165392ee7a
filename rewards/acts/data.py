"""The labelled therapist utterances written for this project.

``data/examples.jsonl`` (neat, one act per line, >= 15 per type) and ``data/speech_examples.jsonl``
(transcribed style: fillers, several sentences, questions without "?") train the embedded
classifier; ``data/eval.jsonl``
is a separate, held-out set for measuring both classifiers (``bench/act_labels.py``). Each line:
``{"text": ..., "type": ..., "context": optional patient utterance before it}``. An evaluation file
may give ``category`` instead of (or besides) ``type`` where only the category is clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbtgym.jsonl import iter_jsonl_objects

from .taxonomy import CATEGORIES, act_types, category_of

DATA_DIR = Path(__file__).with_name("data")
EXAMPLES_FILE = DATA_DIR / "examples.jsonl"
EVAL_FILE = DATA_DIR / "eval.jsonl"
#: Transcribed-style training turns (disfluent, multi-sentence, mixed acts), written for this project.
SPEECH_EXAMPLES_FILE = DATA_DIR / "speech_examples.jsonl"
#: Everything the embedded classifier fits on.
TRAIN_FILES = (EXAMPLES_FILE, SPEECH_EXAMPLES_FILE)


@dataclass(frozen=True)
class LabelledUtterance:
    """One therapist utterance with its act type and, optionally, the patient's words before it.

    ``type`` is ``None`` on an evaluation line that gives only its category (``gold_category``).
    """

    text: str
    type: str | None
    context: str | None = None
    gold_category: str | None = None

    @property
    def category(self) -> str:
        return category_of(self.type) if self.type is not None else str(self.gold_category)


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
    """Read a labelled JSONL file (``text``, ``type`` and/or ``category``, optional ``context``), validating every line.

    Raises:
        ValueError: For a bad line (no label, an unknown one, a type outside its category); the message
            names the file, the line number and the field.
    """
    labels = act_types()
    out = []
    for n, obj in iter_jsonl_objects(path):
        where = f"{path}:{n}"
        text = required_text(obj, "text", where)
        label = optional_text(obj, "type", where)
        category = optional_text(obj, "category", where)
        if label is None and category is None:
            raise ValueError(f"{where}: needs a \"type\" (one of {', '.join(labels)}) or at least a \"category\"")
        if label is not None and label not in labels:
            raise ValueError(f"{where}: field 'type' is {label!r}, not an act type; use one of {', '.join(labels)}")
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"{where}: field 'category' is {category!r}; use one of {', '.join(CATEGORIES)}")
        if label is not None and category is not None and category_of(label) != category:
            raise ValueError(f"{where}: field 'category' is {category!r} but type {label!r} is in {category_of(label)!r}; make them agree")
        out.append(LabelledUtterance(text, label, optional_text(obj, "context", where), category))
    return out


def load_examples() -> list[LabelledUtterance]:
    """The embedded classifier's training utterances."""
    return load_labelled(EXAMPLES_FILE)


def load_training() -> list[LabelledUtterance]:
    """All of the embedded classifier's training utterances: the neat examples and the transcribed-style ones."""
    return [u for path in TRAIN_FILES for u in load_labelled(path)]


def load_eval() -> list[LabelledUtterance]:
    """The held-out evaluation utterances."""
    return load_labelled(EVAL_FILE)
