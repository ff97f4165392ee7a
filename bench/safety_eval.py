"""Quality of the safety checks on ``rewards/safety/data/probes.jsonl``.

    PYTHONPATH=. python bench/safety_eval.py                 # rules, and rules + MiniLM
    PYTHONPATH=. python bench/safety_eval.py --judge rules   # one configuration
    PYTHONPATH=. python bench/safety_eval.py --judge hf:/path/to/model   # an LLM judge (slow on CPU)
    PYTHONPATH=. python bench/safety_eval.py --sweep         # the grid the MiniLM threshold was picked from (dev)
    PYTHONPATH=. python bench/safety_eval.py --calibrate     # the grid the classifier threshold was picked from
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
from rewards.safety import CRISIS_TYPES, CrisisFinding
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
    detector.detect(["warm-up"])  # load the embedder and fit the models outside the timing
    if hasattr(detector, "classifier_scores"):
        detector.classifier_scores(["warm-up text here"])
    checker.check(["warm-up", "warm-up"], ["warm-up", "warm-up"], [CrisisFinding.from_types(["suicidal_ideation"]), CrisisFinding(False)])
    if crisis:
        m = crisis_talk_metrics(detector, load_crisis_talk(crisis))
        print(f"crisis talk {crisis}: {m['ms_per_item']:.1f} ms/item\n  crisis: {_binary_line(m['binary'])}")
        print("  recall per type: " + ", ".join(f"{t} {_pct(r)} (n {n})" for t, (r, n) in m["per_type_recall"].items()))
        print(f"  recall on indirect crises: {_pct(m['indirect_recall'][0])} (n {m['indirect_recall'][1]})")
        if show_errors and m["errors"]:
            print("  errors:\n    " + "\n    ".join(m["errors"]))
    if replies:
        for gold in (False, True):
            m = reply_set_metrics(checker, detector, load_reply_set(replies), gold_crisis=gold)
            crisis_from = "every stimulus a crisis (gold), typed by the detector" if gold else "the detector's crisis findings"
            print(f"replies {replies}, {crisis_from}: {m['ms_per_item']:.1f} ms/item, unknown verdicts {m['unknown']}")
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


def calibrate() -> None:
    """The classifier threshold grid on the ``dev`` split of the written training set (never fitted on)."""
    from rewards.safety import EmbeddedCrisisDetector
    from rewards.safety.trainsets import crisis_training_items

    dev = crisis_training_items("dev")
    texts, gold = [r["text"] for r in dev], [r["crisis"] for r in dev]
    det = EmbeddedCrisisDetector()
    rules = [bool(det.rules.find(t)) for t in texts]
    sim = [bool(h) for h in det.similarity_hits(texts)]
    top = [max((p for p, _ in s.values()), default=0.0) for s in det.classifier_scores(texts)]
    n_pos, n_neg = sum(gold), len(gold) - sum(gold)
    print(f"dev split of the crisis training set: {n_pos} crises, {n_neg} ordinary")
    for name, base in (("rules", rules), ("rules + similarity", [r or s for r, s in zip(rules, sim)])):
        print(f"{name} alone: recall {sum(b and g for b, g in zip(base, gold))}/{n_pos}, "
              f"false positives {sum(b and not g for b, g in zip(base, gold))}/{n_neg}")
    for gate in (0.0, 0.5, det.similarity_gate, 1.01):
        base = [r or (s and p >= gate) for r, s, p in zip(rules, sim, top)]
        print(f"similarity hits counted at classifier score >= {gate:.2f}: recall {sum(b and g for b, g in zip(base, gold))}/{n_pos}, "
              f"false positives {sum(b and not g for b, g in zip(base, gold))}/{n_neg}")
    base = [r or (s and p >= det.similarity_gate) for r, s, p in zip(rules, sim, top)]
    for thr in (0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.95):
        pred = [b or p >= thr for b, p in zip(base, top)]
        tp = sum(p and g for p, g in zip(pred, gold))
        fp = sum(p and not g for p, g in zip(pred, gold))
        print(f"classifier threshold {thr:.2f}: recall {tp}/{n_pos} ({_pct(tp / n_pos)}), false positives {fp}/{n_neg} ({_pct(fp / n_neg)})")


def calibrate_replies() -> None:
    """The reply model's thresholds on the ``dev`` split of the reply training set, its stimuli's types given."""
    from rewards.safety import CrisisFinding, EmbeddedCrisisDetector, EmbeddedReplyChecker
    from rewards.safety.evalsets import binary_scores
    from rewards.safety.reply_model import PairedReplyModel
    from rewards.safety.trainsets import reply_training_items

    dev = reply_training_items("dev")
    stimuli, replies, gold = [r["stimulus"] for r in dev], [r["reply"] for r in dev], [r["appropriate"] for r in dev]
    found = [CrisisFinding.from_types(r["types"]) for r in dev]
    detector = EmbeddedCrisisDetector()
    print(f"\ndev split of the reply training set: {sum(gold)} appropriate, {len(gold) - sum(gold)} not (stimulus types given)")
    # The model alone, per criterion: how often it would accept a requirement (or flag a violation) that holds or fails.
    probs = PairedReplyModel(detector._embed).proba(stimuli, replies)
    for criterion, p in probs.items():
        holds = [r["criteria"][criterion] for r in dev]
        cells = []
        for t in ((0.7, 0.8, 0.9, 0.95) if criterion in ("risk_acknowledged", "help_offered") else (0.05, 0.1, 0.2, 0.3)):
            said = p >= t if criterion in ("risk_acknowledged", "help_offered") else p <= t
            hit = sum(s and (h if criterion in ("risk_acknowledged", "help_offered") else not h) for s, h in zip(said, holds))
            cells.append(f"{t:.2f}: {hit}/{int(said.sum())} right")
        print(f"  model {criterion:18} (holds {sum(holds)}/{len(holds)}) " + " | ".join(cells))
    suspect_grid(detector)
    for accept, flag in ((1.0, 0.0), (0.95, 0.0), (0.9, 0.0), (0.8, 0.0), (1.0, 0.1), (1.0, 0.2), (0.9, 0.1)):
        checker = EmbeddedReplyChecker(detector=detector, accept=accept, flag=flag)
        b = binary_scores([c.response_safe is True for c in checker.check(stimuli, replies, found)], gold)
        print(f"accept {accept:.2f} flag {flag:.2f}: appropriate kept {_pct(b['recall'])}, inappropriate caught {_pct(b['neg_recall'])}, "
              f"balanced acc {_pct(b['balanced_accuracy'])}")


def suspect_grid(detector) -> None:
    """How often the reply model's own crisis read flags a stimulus the detector passed, on the ``dev`` splits:
    ordinary talk of the crisis training set (false alarms) and its crises plus the reply set's stimuli."""
    from rewards.safety.reply_model import PairedReplyModel
    from rewards.safety.trainsets import crisis_training_items, reply_training_items

    dev = crisis_training_items("dev")
    ordinary = [r["text"] for r in dev if not r["crisis"]]
    crises = [r["text"] for r in dev if r["crisis"]] + sorted({r["stimulus"] for r in reply_training_items("dev")})
    model = PairedReplyModel(detector._embed)
    print(f"\nstimulus crisis read on dev, where the detector found nothing: {len(ordinary)} ordinary, {len(crises)} crises")
    for name, texts in (("ordinary", ordinary), ("crises", crises)):
        passed = [t for t, f in zip(texts, detector.detect(texts)) if not f.crisis]
        p = model.crisis_proba(passed)
        cells = " | ".join(f"{t:.2f}: {int((p >= t).sum())}" for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
        print(f"  {name:8} detected {len(texts) - len(passed)}/{len(texts)}; of the rest flagged at P >= {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", action="append", help="'rules', 'embedded' or a backend spec (repeatable)")
    parser.add_argument("--errors", action="store_true", help="list every misclassified probe")
    parser.add_argument("--sweep", action="store_true", help="print the threshold grid of the MiniLM backstop on dev")
    parser.add_argument("--crisis", metavar="FILE", help="score crisis detection on a crisis-talk JSONL file instead of the probes")
    parser.add_argument("--replies", metavar="FILE", help="score the reply check on a replies JSONL file instead of the probes")
    parser.add_argument("--calibrate", action="store_true", help="print the classifier threshold grid on the training set's dev split")
    args = parser.parse_args()
    if args.calibrate:
        calibrate()
        calibrate_replies()
        return
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
