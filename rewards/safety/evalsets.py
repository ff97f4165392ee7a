"""External safety evaluation files and their metrics (``bench/safety_eval.py --crisis/--replies``).

Two JSONL formats, one object a line:

* crisis talk: ``{"text": str, "crisis": bool, "types": [crisis type, ...], "indirect": bool}``;
* replies: ``{"stimulus": str, "reply": str, "appropriate": bool, "criteria": {name: bool | null}}``
  with criteria ``no_means``, ``no_collusion``, ``risk_acknowledged``, ``help_offered``.

The checks never read these files: they are evaluation only, scored by path. Error lines name an
item's id and the verdicts, not its text, so a report does not leak the held-out items.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from cbtgym.jsonl import iter_jsonl_objects

from .findings import CRISIS_TYPES, CrisisFinding, ReplyCheck

#: How each reply criterion is read off a :class:`ReplyCheck` (True = the criterion holds).
CRITERIA = {
    "no_means": lambda c: "means_information" not in c.violations,
    "no_collusion": lambda c: not ({"colludes_with_delusion", "encourages_risk"} & set(c.violations)),
    "risk_acknowledged": lambda c: "risk_acknowledgment" not in c.missing,
    "help_offered": lambda c: "crisis_resources" not in c.missing,
}


def _need(record: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str, n: int) -> Any:
    value = record.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"{path}:{n}: field {key!r} is required and must be {getattr(kind, '__name__', kind)}")
    return value


def load_crisis_talk(path: str) -> list[dict[str, Any]]:
    """Validated records of a crisis-talk file (see the module docstring).

    Raises:
        ValueError: Naming the file, the line and the field.
    """
    out = []
    for n, r in iter_jsonl_objects(path):
        _need(r, "text", str, path, n), _need(r, "crisis", bool, path, n)
        bad = [t for t in _need(r, "types", list, path, n) if t not in CRISIS_TYPES]
        if bad:
            raise ValueError(f"{path}:{n}: field 'types' has unknown crisis type(s) {bad}; allowed: {list(CRISIS_TYPES)}")
        out.append(r)
    return out


def load_reply_set(path: str) -> list[dict[str, Any]]:
    """Validated records of a reply file (see the module docstring).

    Raises:
        ValueError: Naming the file, the line and the field.
    """
    out = []
    for n, r in iter_jsonl_objects(path):
        _need(r, "stimulus", str, path, n), _need(r, "reply", str, path, n), _need(r, "appropriate", bool, path, n)
        if not isinstance(r.get("criteria", {}), dict):
            raise ValueError(f"{path}:{n}: field 'criteria' must be an object of criterion -> true/false/null")
        out.append(r)
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def binary_scores(pred: Sequence[bool], gold: Sequence[bool]) -> dict[str, float]:
    """Counts, precision/recall of both labels, false-positive rate and balanced accuracy."""
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(g and not p for p, g in zip(pred, gold))
    tn = len(gold) - tp - fp - fn
    rec_pos, rec_neg = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "n": len(gold), "positives": tp + fn, "negatives": tn + fp,
        "precision": _ratio(tp, tp + fp), "recall": rec_pos,
        "neg_precision": _ratio(tn, tn + fn), "neg_recall": rec_neg,
        "false_positive_rate": _ratio(fp, tn + fp), "balanced_accuracy": (rec_pos + rec_neg) / 2,
    }


def crisis_talk_metrics(detector: Any, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Crisis detection on a crisis-talk set: binary scores, recall per type and on indirect items, ms per item."""
    t0 = time.perf_counter()
    found = detector.detect([r["text"] for r in items])
    ms = 1000 * (time.perf_counter() - t0) / max(1, len(items))
    pred, gold = [bool(f.crisis) for f in found], [r["crisis"] for r in items]
    m: dict[str, Any] = {"binary": binary_scores(pred, gold), "ms_per_item": ms}
    m["per_type_recall"] = {
        t: (_ratio(sum(bool(f.crisis) for f, r in zip(found, items) if t in r["types"]), sum(t in r["types"] for r in items)),
            sum(t in r["types"] for r in items))
        for t in CRISIS_TYPES
    }
    ind = [(p, g) for p, g, r in zip(pred, gold, items) if r.get("indirect") and g]
    m["indirect_recall"] = (_ratio(sum(p for p, _ in ind), len(ind)), len(ind))
    m["errors"] = [f"{r.get('id', i)}: gold {r['types'] or 'none'} got {list(f.types) or 'none'}"
                   for i, (f, r) in enumerate(zip(found, items)) if bool(f.crisis) != r["crisis"]]
    return m


def reply_set_metrics(checker: Any, detector: Any, items: Sequence[dict[str, Any]], gold_crisis: bool = False) -> dict[str, Any]:
    """Reply checking end to end (the detector reads each stimulus): appropriate/inappropriate scores,
    accuracy per criterion, ms per item.

    Args:
        checker: The reply checker.
        detector: The crisis detector that reads each stimulus.
        items: Records of a reply file.
        gold_crisis: Take every stimulus as a crisis (the reply sets hold only crises), typed as the detector
            finds it and of unknown type where it finds none: the reply check apart from the detector's misses.
    """
    t0 = time.perf_counter()
    stimuli = [r["stimulus"] for r in items]
    found = detector.detect(stimuli)
    if gold_crisis:
        found = [f if f.crisis else CrisisFinding(True) for f in found]
    checks: list[ReplyCheck] = checker.check(stimuli, [r["reply"] for r in items], found)
    ms = 1000 * (time.perf_counter() - t0) / max(1, len(items))
    pred, gold = [c.response_safe is True for c in checks], [r["appropriate"] for r in items]
    m: dict[str, Any] = {"binary": binary_scores(pred, gold), "ms_per_item": ms,
                         "unknown": sum(c.response_safe is None for c in checks)}
    m["per_criterion"] = {}
    for name, holds in CRITERIA.items():
        pairs = [(holds(c), r["criteria"][name]) for c, r in zip(checks, items) if r.get("criteria", {}).get(name) is not None]
        m["per_criterion"][name] = {"accuracy": _ratio(sum(p == g for p, g in pairs), len(pairs)), "n": len(pairs),
                                    **{k: binary_scores([not p for p, _ in pairs], [not g for _, g in pairs])[k]
                                       for k in ("recall", "neg_recall")}}
    m["errors"] = [f"{r.get('id', i)}: appropriate={r['appropriate']} got {c.response_safe} {list(c.problems)}"
                   for i, (c, r) in enumerate(zip(checks, items)) if (c.response_safe is True) != r["appropriate"]]
    return m
