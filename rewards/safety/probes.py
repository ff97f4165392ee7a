"""The safety evaluation set (``data/probes.jsonl``) and the metrics computed on it.

Two kinds of line: ``detect`` (a patient utterance, ``crisis`` and gold ``types``) and ``reply``
(patient text, therapist reply, gold ``safe`` and the expected problems). ``split`` is ``dev``
(used to write the rules and pick the embedding threshold), ``test`` (held out from tuning, but
written in the same sitting as the rules) or ``fresh`` (written after the first rules and scored blind once; the rules, exemplars and
classifier added for issue 17 were written with it visible, so it is no longer a blind estimate;
see ``bench/safety_eval.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .findings import CRISIS_TYPES
from .patterns import DATA_DIR

PROBES = DATA_DIR / "probes.jsonl"
SPLITS = ("dev", "test", "fresh")


def load_probes(path: str | Path = PROBES, splits: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(detect_items, reply_items)`` of the probe file, optionally only some splits."""
    detect, reply = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if splits is not None and item.get("split") not in splits:
            continue
        if item["kind"] == "detect":
            bad = [t for t in item["types"] if t not in CRISIS_TYPES]
            if bad:
                raise ValueError(f"{path}:{n}: unknown crisis type(s) {bad}")
            detect.append(item)
        elif item["kind"] == "reply":
            reply.append(item)
        else:
            raise ValueError(f"{path}:{n}: field 'kind' must be 'detect' or 'reply' (got {item['kind']!r})")
    return detect, reply


@dataclass
class SafetyMetrics:
    """Detection and reply-check quality on a set of probes."""

    n_detect: int = 0
    n_crisis: int = 0
    crisis_recall: float = float("nan")
    false_positive_rate: float = float("nan")
    false_positives: int = 0
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    n_reply: int = 0
    reply_accuracy: float = float("nan")
    unsafe_recall: float = float("nan")
    safe_recall: float = float("nan")
    errors: list[str] = field(default_factory=list)


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def evaluate(detector: Any, checker: Any, detect_items: Sequence[dict[str, Any]], reply_items: Sequence[dict[str, Any]]) -> SafetyMetrics:
    """Score a detector and a checker on probes (the checker sees the detector's findings: end to end)."""
    m = SafetyMetrics(n_detect=len(detect_items), n_reply=len(reply_items))
    if detect_items:
        found = detector.detect([d["patient"] for d in detect_items])
        pos = [bool(f.crisis) for f in found]
        gold = [d["crisis"] for d in detect_items]
        m.n_crisis = sum(gold)
        m.crisis_recall = _ratio(sum(p and g for p, g in zip(pos, gold)), sum(gold))
        m.false_positives = sum(p and not g for p, g in zip(pos, gold))
        m.false_positive_rate = _ratio(m.false_positives, len(gold) - sum(gold))
        for t in CRISIS_TYPES:
            tp = sum(t in f.types and t in d["types"] for f, d in zip(found, detect_items))
            m.per_type[t] = {
                "support": float(sum(t in d["types"] for d in detect_items)),
                "precision": _ratio(tp, sum(t in f.types for f in found)),
                "recall": _ratio(tp, sum(t in d["types"] for d in detect_items)),
            }
        m.errors += [f"detect {d['id']}: gold {d['types']} got {list(f.types)}: {d['patient']}"
                     for f, d in zip(found, detect_items) if bool(f.crisis) != d["crisis"]]
    if reply_items:
        checks = checker.check([r["patient"] for r in reply_items], [r["therapist"] for r in reply_items],
                               detector.detect([r["patient"] for r in reply_items]))
        right = [c.response_safe == r["safe"] for c, r in zip(checks, reply_items)]
        m.reply_accuracy = _ratio(sum(right), len(right))
        m.unsafe_recall = _ratio(sum(c.response_safe is False and not r["safe"] for c, r in zip(checks, reply_items)),
                                 sum(not r["safe"] for r in reply_items))
        m.safe_recall = _ratio(sum(c.response_safe is True and r["safe"] for c, r in zip(checks, reply_items)),
                               sum(r["safe"] for r in reply_items))
        m.errors += [f"reply {r['id']}: gold safe={r['safe']} got {c.response_safe} {list(c.problems)}: {r['therapist'][:80]}"
                     for c, r, ok in zip(checks, reply_items, right) if not ok]
    return m
