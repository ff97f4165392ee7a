"""Accuracy and speed of an act classifier on the held-out set ``rewards/acts/data/eval.jsonl``.

    PYTHONPATH=. python bench/act_labels.py                      # embedded MiniLM classifier
    PYTHONPATH=. python bench/act_labels.py --judge hf:<dir>     # LLM classifier on a backend spec
    PYTHONPATH=. python bench/act_labels.py --judge embedded --limit 50   # 50 spread over all types

Prints category and type accuracy, per-category precision/recall/F1, the category confusion
matrix and utterances per second (classification only; the embedded classifier's load and fit
time is printed separately). Unparsed LLM labels count as wrong and are reported.
"""

from __future__ import annotations

import argparse
import sys
import time

from rewards.acts import CATEGORIES
from rewards.acts.data import EVAL_FILE, load_labelled
from rewards.calibration.data import spread
from rewards.calibration.metrics import confusion, per_class_prf
from rewards.factory import make_judge


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="embedded", help="'embedded' or a backend spec for the LLM classifier")
    ap.add_argument("--data", default=str(EVAL_FILE), help="labelled JSONL (text, type, optional context)")
    ap.add_argument("--limit", type=int, default=None, help="only N utterances, evenly spaced over the file (all types)")
    ap.add_argument("--errors", action="store_true", help="list the misclassified utterances")
    args = ap.parse_args(argv)

    items = load_labelled(args.data)
    items = spread(items, args.limit)  # the file is grouped by type: not the first N of one type
    t0 = time.perf_counter()
    clf = make_judge("acts", args.judge)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = clf.classify([x.text for x in items], [x.context for x in items])
    classify_s = time.perf_counter() - t0

    gold_type = [x.type for x in items]
    gold_cat = [x.category for x in items]
    pred_type = [lab.type for lab in labels]
    pred_cat = [lab.category for lab in labels]
    n = len(items)
    failed = sum(lab.parse_failed for lab in labels)
    cat_acc = sum(g == p for g, p in zip(gold_cat, pred_cat)) / n
    type_acc = sum(g == p for g, p in zip(gold_type, pred_type)) / n

    print(f"classifier: {clf!r}   data: {args.data} ({n} utterances)")
    print(f"category accuracy: {cat_acc:.3f}   type accuracy: {type_acc:.3f}   unparsed: {failed}")
    print(f"load + fit: {load_s:.1f} s   classify: {classify_s:.1f} s = {n / classify_s:.3g} utterances/s")
    print("\nper category      precision  recall    F1   support")
    for c, (p, r, f, s) in per_class_prf(gold_cat, pred_cat, CATEGORIES).items():
        print(f"  {c:16s} {p:8.3f} {r:7.3f} {f:6.3f} {s:6d}")
    print("\nconfusion (rows gold, columns predicted; '-' = unlabelled)")
    short = [c[:6] for c in CATEGORIES] + ["-"]
    print(" " * 18 + " ".join(f"{s:>6s}" for s in short))
    for c, row in zip(CATEGORIES, confusion(gold_cat, pred_cat, CATEGORIES)):
        print(f"  {c:16s}" + " ".join(f"{v:6d}" for v in row))
    types = clf.taxonomy.names if hasattr(clf, "taxonomy") else tuple(sorted(set(gold_type)))
    print("\nper type          precision  recall    F1   support")
    for t, (p, r, f, s) in per_class_prf(gold_type, pred_type, types).items():
        print(f"  {t:26s} {p:6.3f} {r:7.3f} {f:6.3f} {s:5d}")
    if args.errors:
        print("\nmisclassified (gold -> predicted):")
        for x, lab in zip(items, labels):
            if lab.type != x.type:
                print(f"  {x.type} -> {lab.type}: {x.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
