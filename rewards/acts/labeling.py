"""Label a JSONL file of therapist utterances (what ``cbtgym label`` runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cbtgym.backends.base import Backend

from cbtgym.jsonl import iter_jsonl_objects

from .data import optional_text
from .labels import ActClassifier

def label_file(
    in_path: str | Path, out_path: str | Path, classifier: ActClassifier | str | Backend, batch_size: int = 256
) -> int:
    """Label every utterance of a JSONL file.

    Each input line is ``{"text": ..., "context": optional, ...}``; each output line is the same
    object plus ``"type"``, ``"category"`` and ``"confidence"`` (``null`` when an LLM label could
    not be parsed; then ``"parse_failed": true`` too). The whole input is validated before any
    model runs, and the output is written only after every line is labelled.

    Args:
        in_path: Input JSONL.
        out_path: Output JSONL (overwritten; parent folders are created).
        classifier: Any act classifier, or a ``--judge`` value for :func:`rewards.factory.make_judge`
            (built only after the input has been validated, so a bad file fails before a model loads).
        batch_size: Utterances per ``classify`` call.

    Returns:
        The number of lines labelled.

    Raises:
        ValueError: For a bad input line; the message names the file, the line number and the field.
        FileNotFoundError: When ``in_path`` does not exist.
    """
    records, texts, contexts = [], [], []
    for n, obj in iter_jsonl_objects(in_path):
        where = f"{in_path}:{n}"
        text = optional_text(obj, "text", where)
        if text is None:
            raise ValueError(f"{where}: field 'text' is missing; every line needs {{\"text\": \"<therapist utterance>\"}}")
        texts.append(text)
        contexts.append(optional_text(obj, "context", where))
        records.append(obj)
    if not isinstance(classifier, ActClassifier):
        from ..factory import make_judge

        classifier = make_judge("acts", classifier)
    labels = []
    for start in range(0, len(texts), batch_size):
        labels += classifier.classify(texts[start : start + batch_size], contexts[start : start + batch_size])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for obj, label in zip(records, labels):
            row = {**obj, "category": label.category, "type": label.type, "confidence": label.confidence}
            if label.parse_failed:
                row["parse_failed"] = True
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(records)
