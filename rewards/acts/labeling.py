"""Label a JSONL file of therapist utterances (what ``cbtgym label`` runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cbtgym.backends.base import Backend

from .data import iter_jsonl_objects, optional_text
from .labels import ActClassifier

EMBEDDED = "embedded"


def make_act_classifier(judge: str | Backend | dict[str, Any] = EMBEDDED) -> ActClassifier:
    """The act classifier named by a CLI ``--judge`` value.

    Args:
        judge: ``"embedded"`` for :class:`~rewards.acts.embedded_classifier.EmbeddedActClassifier`;
            anything else is a backend spec (see :func:`cbtgym.backends.factory.make_backend`, e.g.
            ``"hf:<dir>"``, ``"vllm:embedded"``) or a backend, for
            :class:`~rewards.acts.llm_classifier.LLMActClassifier`.
    """
    if judge == EMBEDDED:
        from .embedded_classifier import EmbeddedActClassifier

        return EmbeddedActClassifier()
    from cbtgym.backends.factory import make_backend

    from .llm_classifier import LLMActClassifier

    return LLMActClassifier(make_backend(judge))


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
        classifier: Any act classifier, or a ``--judge`` value for :func:`make_act_classifier`
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
        classifier = make_act_classifier(classifier)
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
