"""Quality of the safety checks on ``rewards/safety/data/probes.jsonl``.

    PYTHONPATH=. python bench/safety_eval.py                 # rules, and rules + MiniLM
    PYTHONPATH=. python bench/safety_eval.py --judge rules   # one configuration
    PYTHONPATH=. python bench/safety_eval.py --judge hf:/path/to/model   # an LLM judge (slow on CPU)
    PYTHONPATH=. python bench/safety_eval.py --sweep         # the grid the MiniLM threshold was picked from (dev)
    PYTHONPATH=. python bench/safety_eval.py --crisis bench/data/crisis_talk.jsonl --replies bench/data/crisis_replies.jsonl

Prints, per split (dev: rules written and threshold chosen on it; test: held out from tuning but
written in the same sitting; fresh: written after the first rules and scored blind then; the issue-17 rules were written with it
visible, so the honest estimate of generalisation is now ``--crisis``/``--replies`` on a held-out set), crisis recall, false-positive rate, precision/recall per crisis type, reply-check
accuracy, and the time per item. With ``--crisis FILE`` / ``--replies FILE`` it scores those sets instead
(formats in ``rewards/safety/evalsets.py``): precision/recall of both labels, false-positive rate,
balanced accuracy, recall per crisis type and on indirect items, accuracy per reply criterion, sizes
and ms per item.
"""

from __future__ import annotations

import argparse
import math
import time


from rewards.factory import make_judge
from rewards.safety import CRISIS_TYPES
from rewards.safety.evalsets import crisis_talk_metrics, load_crisis_talk, load_reply_set, reply_set_metrics
from rewards.safety.probes import SPLITS, evaluate, load_probes


def _pct(x: float) -> str:
    return "  n/a" if math.isnan(x) else f"{100 * x:5.1f}"


def report(judge: str, show_errors: bool) -> None:
    detector = make_judge("crisis", judge)
    checker = make_judge("reply_check", judge, detector=detector)
    print(f"\n## judge = {judge} ({getattr(detector, 'name', type(detector).__name__)})")
    print(f"{'split':6} {'n_det':>5} {'recall':>6} {'FPR':>6} {'n_rep':>5} {'reply_acc':>9} {'unsafe_rec':>10} {'safe_rec':>8} {'ms/item':>8}")
    per_split = {}
    for split in (*SPLITS, "dev+test"):
        splits = ["dev", "test"] if split == "dev+test" else [split]
        detect, reply = load_probes(splits=splits)
        t0 = time.perf_counter()
        m = evaluate(detector, checker, detect, reply)
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(detect) + len(reply))
        per_split[split] = m
        print(f"{split:6} {m.n_detect:5d} {_pct(m.crisis_recall):>6} {_pct(m.false_positive_rate):>6} {m.n_reply:5d} "
              f"{_pct(m.reply_accuracy):>9} {_pct(m.unsafe_recall):>10} {_pct(m.safe_recall):>8} {ms:8.1f}")
    for split in ("dev+test", "fresh"):
        m = per_split[split]
        print(f"\nper type ({split}):  type               support  precision  recall")
        for t in CRISIS_TYPES:
            row = m.per_type[t]
            print(f"                    {t:18} {int(row['support']):7d}  {_pct(row['precision']):>9}  {_pct(row['recall']):>6}")
        if show_errors and m.errors:
            print(f"errors ({split}):\n  " + "\n  ".join(m.errors))


def _binary_line(b: dict) -> str:
    return (f"n {b['n']} (pos {b['positives']}, neg {b['negatives']})  precision {_pct(b['precision'])}  recall {_pct(b['recall'])}  "
            f"neg-precision {_pct(b['neg_precision'])}  neg-recall {_pct(b['neg_recall'])}  FPR {_pct(b['false_positive_rate'])}  "
            f"balanced acc {_pct(b['balanced_accuracy'])}")


def report_files(judge: str, crisis: str | None, replies: str | None, show_errors: bool) -> None:
    detector = make_judge("crisis", judge)
    checker = make_judge("reply_check", judge, detector=detector)
    print(f"\n## judge = {judge} ({getattr(detector, 'name', type(detector).__name__)})")
    detector.detect(["warm-up"])  # load the embedder outside the timing
    if crisis:
        m = crisis_talk_metrics(detector, load_crisis_talk(crisis))
        print(f"crisis talk {crisis}: {m['ms_per_item']:.1f} ms/item\n  crisis: {_binary_line(m['binary'])}")
        print("  recall per type: " + ", ".join(f"{t} {_pct(r)} (n {n})" for t, (r, n) in m["per_type_recall"].items()))
        print(f"  recall on indirect crises: {_pct(m['indirect_recall'][0])} (n {m['indirect_recall'][1]})")
        if show_errors and m["errors"]:
            print("  errors:\n    " + "\n    ".join(m["errors"]))
    if replies:
        m = reply_set_metrics(checker, detector, load_reply_set(replies))
        print(f"replies {replies}: {m['ms_per_item']:.1f} ms/item, unknown verdicts {m['unknown']}")
        print(f"  appropriate: {_binary_line(m['binary'])}")
        for name, row in m["per_criterion"].items():
            print(f"  criterion {name:18} accuracy {_pct(row['accuracy'])}  failures caught {_pct(row['recall'])}  "
                  f"holds kept {_pct(row['neg_recall'])}  (n {row['n']})")
        if show_errors and m["errors"]:
            print("  errors:\n    " + "\n    ".join(m["errors"]))


def sweep() -> None:
    from rewards.safety import EmbeddedCrisisDetector

    detect, _ = load_probes(splits=["dev"])
    det = EmbeddedCrisisDetector()
    gold = [d["crisis"] for d in detect]
    print("MiniLM backstop alone on dev (rules off): recall / false positives")
    for thr in (0.5, 0.55, 0.6, 0.65, 0.7):
        cells = []
        for margin in (0.0, 0.05, 0.1):
            det.threshold, det.margin = thr, margin
            hits = [bool(h) for h in det.similarity_hits([d["patient"] for d in detect])]
            tp = sum(h and g for h, g in zip(hits, gold))
            fp = sum(h and not g for h, g in zip(hits, gold))
            cells.append(f"margin {margin:.2f}: {tp}/{sum(gold)} fp {fp}/{len(gold) - sum(gold)}")
        print(f"threshold {thr:.2f}  " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", action="append", help="'rules', 'embedded' or a backend spec (repeatable)")
    parser.add_argument("--errors", action="store_true", help="list every misclassified probe")
    parser.add_argument("--sweep", action="store_true", help="print the threshold grid of the MiniLM backstop on dev")
    parser.add_argument("--crisis", metavar="FILE", help="score crisis detection on a crisis-talk JSONL file instead of the probes")
    parser.add_argument("--replies", metavar="FILE", help="score the reply check on a replies JSONL file instead of the probes")
    args = parser.parse_args()
    if args.sweep:
        sweep()
        return
    if args.crisis or args.replies:
        for judge in args.judge or ["rules", "embedded"]:
            report_files(judge, args.crisis, args.replies, args.errors)
        return
    for judge in args.judge or ["rules", "embedded"]:
        report(judge, args.errors)


if __name__ == "__main__":
    main()
