"""Accuracy and speed of an act classifier on a labelled set (default: the held-out ``rewards/acts/data/eval.jsonl``).

    PYTHONPATH=. python bench/act_labels.py                      # embedded MiniLM classifier
    PYTHONPATH=. python bench/act_labels.py --judge hf:<dir>     # LLM classifier on a backend spec
    PYTHONPATH=. python bench/act_labels.py --judge embedded --limit 50   # 50 spread over all types
    PYTHONPATH=. python bench/act_labels.py --data other.jsonl           # another set ("category" lines allowed)

Prints category accuracy, balanced accuracy (mean per-category recall), type accuracy (over the
lines that give a type), per-category and per-type precision/recall/F1 with their n, the category
confusion matrix and utterances per second (classification only; the embedded classifier's load and fit
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
    typed = [(g, p) for g, p in zip(gold_type, pred_type) if g is not None]
    type_acc = sum(g == p for g, p in typed) / len(typed) if typed else float("nan")
    prf = per_class_prf(gold_cat, pred_cat, CATEGORIES)
    balanced = sum(r for _, r, _, s in prf.values() if s) / sum(1 for *_, s in prf.values() if s)

    print(f"classifier: {clf!r}   data: {args.data} ({n} utterances)")
    print(f"category accuracy: {cat_acc:.3f}   balanced accuracy: {balanced:.3f}   "
          f"type accuracy: {type_acc:.3f} (of {len(typed)} typed)   unparsed: {failed}")
    print(f"load + fit: {load_s:.1f} s   classify: {classify_s:.1f} s = {n / classify_s:.3g} utterances/s")
    print("\nper category      precision  recall    F1   support")
    for c, (p, r, f, s) in prf.items():
        print(f"  {c:16s} {p:8.3f} {r:7.3f} {f:6.3f} {s:6d}")
    print("\nconfusion (rows gold, columns predicted; '-' = unlabelled)")
    short = [c[:6] for c in CATEGORIES] + ["-"]
    print(" " * 18 + " ".join(f"{s:>6s}" for s in short))
    for c, row in zip(CATEGORIES, confusion(gold_cat, pred_cat, CATEGORIES)):
        print(f"  {c:16s}" + " ".join(f"{v:6d}" for v in row))
    types = clf.taxonomy.names if hasattr(clf, "taxonomy") else tuple(sorted({g for g, _ in typed}))
    print("\nper type          precision  recall    F1   support")
    for t, (p, r, f, s) in per_class_prf([g for g, _ in typed], [p for _, p in typed], types).items():
        print(f"  {t:26s} {p:6.3f} {r:7.3f} {f:6.3f} {s:5d}")
    if args.errors:
        print("\nmisclassified (gold -> predicted):")
        for x, lab in zip(items, labels):
            if lab.category != x.category or (x.type is not None and lab.type != x.type):
                print(f"  {x.type or x.category} -> {lab.type}: {x.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
