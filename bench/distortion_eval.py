"""How well a distortion detector names the Beck/Burns distortions of bench/data/distortions.jsonl.

    PYTHONPATH=$PWD python bench/distortion_eval.py                 # the embedded MiniLM detector
    PYTHONPATH=$PWD python bench/distortion_eval.py --judge hf:DIR   # the LLM detector on a model

Prints per-label precision/recall/F1, micro and macro F1, exact-match and any-match accuracy and the
unparsed count (the set is documented in bench/data/distortions.md).
"""

import argparse
import time

from rewards.calibration.metrics import multilabel_prf
from rewards.distortions.data import EVAL_FILE, load_thoughts
from rewards.distortions.taxonomy import distortion_labels
from rewards.factory import make_judge

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--judge", default="embedded", help="'embedded' or a backend spec for the LLM detector")
parser.add_argument("--data", default=str(EVAL_FILE), help="labelled thoughts {text, labels} JSONL")
args = parser.parse_args()

items = load_thoughts(args.data)
start = time.perf_counter()
detector = make_judge("distortions", args.judge)
fitted = time.perf_counter()
found = detector.detect([x.text for x in items])
done = time.perf_counter()
m = multilabel_prf([x.labels for x in items], [f.labels for f in found], distortion_labels())

print(f"{args.data}: {m['n']} thoughts ({sum(not x.labels for x in items)} without a distortion), judge {args.judge!r}; "
      f"load+fit {fitted - start:.1f} s, detect {done - fitted:.1f} s")
print(f"{'label':24s} {'P':>5s} {'R':>5s} {'F1':>5s} {'gold':>5s} {'pred':>5s}")
for label, x in m["per_label"].items():
    print(f"{label:24s} {x['precision']:5.2f} {x['recall']:5.2f} {x['f1']:5.2f} {x['support']:5d} {x['predicted']:5d}")
for key in ("micro_precision", "micro_recall", "micro_f1", "macro_f1", "exact", "any_match"):
    print(f"{key:24s} {m[key]:.3f}" if m[key] is not None else f"{key:24s} n/a")
print(f"{'unparsed':24s} {m['unparsed']}")
