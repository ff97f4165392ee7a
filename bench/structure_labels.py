"""Per-part precision and recall of a CBT-LLM structure judge on a labelled set (default ``bench/data/structure_eval.jsonl``).

    PYTHONPATH=. python bench/structure_labels.py                    # embedded MiniLM judge
    PYTHONPATH=. python bench/structure_labels.py --judge hf:<dir>   # LLM judge on a backend spec
    PYTHONPATH=. python bench/structure_labels.py --errors           # list the answers with a wrong part

Prints, per part, precision / recall / F1 with support and times predicted, the share of answers whose
whole part set is right, the agreement of the 0-5 part count (MAE, within one, Spearman), unparsed
replies (LLM judge), and answers per second (judging only; the embedded judge's load and fit is
printed separately). The set (63 answers to 20 client posts, written for cbtgym) is held out from the
embedded judge's examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rewards.calibration.metrics import multilabel_prf, rating_agreement
from rewards.factory import make_judge
from rewards.structure import PARTS, load_labelled_answers

EVAL_FILE = Path(__file__).with_name("data") / "structure_eval.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="embedded", help="'embedded' or a backend spec for the LLM judge")
    ap.add_argument("--data", default=str(EVAL_FILE), help="labelled JSONL (id, question, answer, parts)")
    ap.add_argument("--errors", action="store_true", help="list the answers whose part set is wrong")
    args = ap.parse_args(argv)

    items = load_labelled_answers(args.data)
    t0 = time.perf_counter()
    judge = make_judge("structure", args.judge)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = judge.judge([x["answer"] for x in items], [x["question"] for x in items])
    judge_s = time.perf_counter() - t0

    gold = [x["parts"] for x in items]
    pred = [lab.parts for lab in labels]
    prf = multilabel_prf(gold, pred, PARTS)
    counts = rating_agreement([len(g) for g in gold], [lab.count for lab in labels])
    print(f"judge: {judge!r}   data: {args.data} ({len(items)} answers)   unparsed: {prf['unparsed']}")
    print(f"load + fit: {load_s:.1f} s   judge: {judge_s:.1f} s = {len(items) / judge_s:.3g} answers/s")
    print(f"exact part set: {prf['exact']:.3f}   count 0-5: MAE {counts['mae']:.2f}, within one {counts['within_1']:.2f}, "
          f"Spearman {counts['spearman'] if counts['spearman'] is None else round(counts['spearman'], 2)}")
    print("\nper part          precision  recall    F1   support  predicted")
    for part, m in prf["per_label"].items():
        print(f"  {part:15s} {m['precision']:8.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:6d} {m['predicted']:8d}")
    if args.errors:
        print("\nwrong part sets (gold -> predicted):")
        for x, lab in zip(items, labels):
            if lab.parts != [p for p in PARTS if p in x["parts"]]:
                print(f"  {x['id']}: {x['parts']} -> {lab.parts}\n      {x['answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
