"""Validate the hand-written safety evaluation sets and print their sizes.

    PYTHONPATH=. python bench/safety_data_check.py
    PYTHONPATH=. python bench/safety_data_check.py --talk bench/data/sealed/crisis_talk_sealed.jsonl \
        --replies bench/data/sealed/crisis_replies_sealed.jsonl

Checks ``bench/data/crisis_talk.jsonl`` and ``bench/data/crisis_replies.jsonl`` (formats in
``bench/data/safety.md``): every line parses, ids are unique, crisis types are known, a crisis item has
types and an ordinary one has none, and a reply is appropriate exactly when it meets all four criteria.
Exits non-zero with the first problem, named by file, id and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from cbtgym.profiles.schema import RISK_FLAGS

DATA = Path(__file__).parent / "data"
CRITERIA = ("no_means", "no_collusion", "risk_acknowledged", "help_offered")
TALK_KEYS = {"id", "text", "crisis", "types", "indirect", "note"}
REPLY_KEYS = {"id", "stimulus", "reply", "appropriate", "criteria", "note"}


def load(path: Path, keys: set[str]) -> list[dict]:
    """Read one JSON object per line, requiring exactly ``keys`` and unique, non-empty ids.

    Raises:
        ValueError: naming the file, line and the field that is wrong.
    """
    rows, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name}:{n}: not JSON ({e})") from None
        if set(row) != keys:
            raise ValueError(f"{path.name}:{n}: fields {sorted(row)}, expected {sorted(keys)}")
        if not row["id"] or row["id"] in seen:
            raise ValueError(f"{path.name}:{n}: id {row['id']!r} is empty or repeated")
        seen.add(row["id"])
        rows.append(row)
    return rows


def check_talk(rows: list[dict]) -> None:
    """Types come from RISK_FLAGS; a crisis item has at least one, an ordinary item none and is not indirect.

    Raises:
        ValueError: naming the item id and the field.
    """
    for r in rows:
        unknown = set(r["types"]) - set(RISK_FLAGS)
        if unknown:
            raise ValueError(f"crisis_talk {r['id']}: types {sorted(unknown)} not in {RISK_FLAGS}")
        if r["crisis"] != bool(r["types"]):
            raise ValueError(f"crisis_talk {r['id']}: crisis={r['crisis']} but types={r['types']}")
        if not r["crisis"] and r["indirect"]:
            raise ValueError(f"crisis_talk {r['id']}: an ordinary item cannot be 'indirect'")
        if not r["text"].strip() or not r["note"].strip():
            raise ValueError(f"crisis_talk {r['id']}: empty text or note")


def check_replies(rows: list[dict]) -> None:
    """Each reply has the four boolean criteria and is appropriate iff all four hold.

    Raises:
        ValueError: naming the reply id and the field.
    """
    for r in rows:
        crit = r["criteria"]
        if set(crit) != set(CRITERIA) or not all(isinstance(v, bool) for v in crit.values()):
            raise ValueError(f"crisis_replies {r['id']}: criteria must be booleans {CRITERIA}, got {crit}")
        if r["appropriate"] != all(crit.values()):
            raise ValueError(f"crisis_replies {r['id']}: appropriate={r['appropriate']} but criteria={crit}")
        if not r["stimulus"].strip() or not r["reply"].strip():
            raise ValueError(f"crisis_replies {r['id']}: empty stimulus or reply")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--talk", type=Path, default=DATA / "crisis_talk.jsonl", help="the crisis-talk file to check")
    ap.add_argument("--replies", type=Path, default=DATA / "crisis_replies.jsonl", help="the replies file to check")
    args = ap.parse_args()
    try:
        talk = load(args.talk, TALK_KEYS)
        check_talk(talk)
        replies = load(args.replies, REPLY_KEYS)
        check_replies(replies)
    except ValueError as e:
        sys.exit(f"safety data: {e}")
    crisis = [r for r in talk if r["crisis"]]
    print(f"crisis_talk: {len(talk)} items, {len(crisis)} crisis ({sum(r['indirect'] for r in crisis)} indirect), "
          f"{len(talk) - len(crisis)} ordinary")
    per_type = Counter(t for r in crisis for t in r["types"])
    for t in RISK_FLAGS:
        print(f"  {t:18} {per_type[t]:3d}")
    stimuli = Counter(r["stimulus"] for r in replies)
    good = sum(r["appropriate"] for r in replies)
    print(f"crisis_replies: {len(replies)} replies to {len(stimuli)} stimuli "
          f"({min(stimuli.values())}-{max(stimuli.values())} each), {good} appropriate, {len(replies) - good} not")
    failed = Counter(c for r in replies for c in CRITERIA if not r["criteria"][c])
    for c in CRITERIA:
        print(f"  fails {c:18} {failed[c]:3d}")


if __name__ == "__main__":
    main()
