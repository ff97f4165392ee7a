"""Thoughts labelled with cognitive distortions: the format of the training, evaluation and calibration files.

One JSON object per line: ``{"text": str, "labels": [distortion labels], "id": str (optional)}``;
``labels`` is ``[]`` for a thought with no distortion. ``data/train.jsonl`` (first-person thoughts
written for this project) trains the embedded detector; ``bench/data/distortions.jsonl``
(transcribed client speech, written apart from it) only measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbtgym.jsonl import iter_jsonl_objects

from ..acts.data import optional_text, required_text
from .taxonomy import check_labels

TRAIN_FILE = Path(__file__).with_name("data") / "train.jsonl"
#: The evaluation set of ``bench/distortion_eval.py`` and the benchmark's ``distortions`` protocol (a repository file).
EVAL_FILE = Path(__file__).resolve().parents[2] / "bench" / "data" / "distortions.jsonl"


@dataclass(frozen=True)
class LabelledThought:
    """A thought or client utterance with its distortion labels (empty: none)."""

    text: str
    labels: tuple[str, ...]
    id: str | None = None


def read_thought(obj: dict[str, Any], where: str) -> LabelledThought:
    """One line's object as a labelled thought; a ValueError naming ``where`` and the field otherwise."""
    if "labels" not in obj:
        raise ValueError(f"{where}: field 'labels' is missing; give a list of distortion labels ([] for none)")
    return LabelledThought(required_text(obj, "text", where).strip(), check_labels(obj["labels"], f"{where}: field 'labels'"),
                           optional_text(obj, "id", where))


def load_thoughts(path: str | Path) -> list[LabelledThought]:
    """Every line of a labelled-thoughts file, validated; errors name the file, line and field.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: For a bad line or an empty file.
    """
    items = [read_thought(obj, f"{path}:{n}") for n, obj in iter_jsonl_objects(path)]
    if not items:
        raise ValueError(f"{path}: the file has no lines; it needs at least one labelled thought")
    return items
