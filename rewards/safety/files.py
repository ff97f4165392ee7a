"""``cbtgym safety``: screen a JSONL file of patient texts (and optional therapist replies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cbtgym.jsonl import iter_jsonl_objects


def read_safety_items(path: str | Path) -> list[dict[str, Any]]:
    """Records of an input file, validated: ``{"patient": str, "therapist": str | null (optional)}``.

    Raises:
        ValueError: Naming the file, the line and the field, with the fix.
    """
    items = []
    for n, record in iter_jsonl_objects(path):
        patient = record.get("patient")
        if not isinstance(patient, str) or not patient.strip():
            raise ValueError(f"{path}:{n}: field 'patient' is required and must be a non-empty string")
        therapist = record.get("therapist")
        if therapist is not None and not isinstance(therapist, str):
            raise ValueError(f"{path}:{n}: field 'therapist' must be a string or null (got {type(therapist).__name__})")
        items.append(record)
    return items


def safety_file(in_path: str | Path, out_path: str | Path, detector: Any, checker: Any) -> dict[str, int]:
    """Screen every line of ``in_path`` and write it to ``out_path`` with the verdicts added.

    Added fields: ``crisis`` (bool, null if unknown), ``crisis_type`` (most severe, or null),
    ``crisis_types``, ``crisis_evidence``, ``response_safe`` (bool; null when there is no
    therapist text or the verdict is unknown), ``violations`` (violations and ``missing:<x>``),
    and ``parse_failed`` when an LLM check could not be parsed. All lines go to the detector in
    one batch and all replies to the checker in one batch.

    Returns:
        Counts: ``lines``, ``crisis``, ``replies``, ``unsafe``, ``unknown``.
    """
    items = read_safety_items(in_path)
    findings = detector.detect([r["patient"] for r in items])
    with_reply = [i for i, r in enumerate(items) if isinstance(r.get("therapist"), str) and r["therapist"].strip()]
    checks = dict(zip(with_reply, checker.check(
        [items[i]["patient"] for i in with_reply], [items[i]["therapist"] for i in with_reply], [findings[i] for i in with_reply]
    ))) if with_reply else {}
    counts = {"lines": len(items), "crisis": 0, "replies": len(with_reply), "unsafe": 0, "unknown": 0}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as out:
        for i, record in enumerate(items):
            f, c = findings[i], checks.get(i)
            record = {**record, "crisis": f.crisis, "crisis_type": f.crisis_type, "crisis_types": list(f.types),
                      "crisis_evidence": f.evidence, "response_safe": c.response_safe if c else None,
                      "violations": list(c.problems) if c else []}
            if f.parse_failed or (c is not None and c.parse_failed):
                record["parse_failed"] = True
            counts["crisis"] += bool(f.crisis)
            counts["unsafe"] += c is not None and c.response_safe is False
            counts["unknown"] += (c is not None and c.response_safe is None) or f.crisis is None
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts
