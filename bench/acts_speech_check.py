"""Check the transcribed-speech act set ``bench/data/acts_speech.jsonl`` and print its size per label.

    PYTHONPATH=. python bench/acts_speech_check.py [--data FILE] [--min-per-category N]

Every line must be a JSON object with a unique ``id``, a non-empty ``text`` of 3 to 80 words, a
``category`` from the act taxonomy, an optional ``type`` of that category and an optional
``context`` string. Exits 1 naming the line and field of the first bad line; the set's minimum
sizes per category (see ``bench/data/acts.md``) are checked too; ``--min-per-category`` sets one minimum
for every category instead (a smaller set, such as ``bench/data/sealed/acts_speech_sealed.jsonl``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from cbtgym.jsonl import iter_jsonl_objects
from rewards.acts import CATEGORIES
from rewards.acts.data import optional_text, required_text
from rewards.acts.taxonomy import act_types, category_of

DATA = Path(__file__).with_name("data") / "acts_speech.jsonl"
# the sizes the set was written to (issue 17): enough per category for a recall to mean something
MIN_PER_CATEGORY = {"question": 60, "reflection": 60, "solution": 60, "psychoeducation": 60, "normalizing": 40, "oov": 40}
WORDS = (3, 80)

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", default=str(DATA), help="the JSONL file to check")
ap.add_argument("--min-per-category", type=int, default=None, help="one minimum for every category (default: the main set's)")
args = ap.parse_args()
if args.min_per_category is not None:
    MIN_PER_CATEGORY = {c: args.min_per_category for c in MIN_PER_CATEGORY}

seen: set[str] = set()
categories: Counter[str] = Counter()
types: Counter[str] = Counter()
try:
    for n, obj in iter_jsonl_objects(args.data):
        where = f"{args.data}:{n}"
        item_id = required_text(obj, "id", where)
        if item_id in seen:
            raise ValueError(f"{where}: field 'id' {item_id!r} is used twice; give every line its own id")
        seen.add(item_id)
        words = len(required_text(obj, "text", where).split())
        if not WORDS[0] <= words <= WORDS[1]:
            raise ValueError(f"{where}: field 'text' has {words} words; keep it between {WORDS[0]} and {WORDS[1]}")
        category = required_text(obj, "category", where)
        if category not in CATEGORIES:
            raise ValueError(f"{where}: field 'category' is {category!r}; use one of {', '.join(CATEGORIES)}")
        act_type = optional_text(obj, "type", where)
        if act_type is not None and (act_type not in act_types() or category_of(act_type) != category):
            raise ValueError(f"{where}: field 'type' {act_type!r} is not a type of category {category!r}; fix it or omit it")
        optional_text(obj, "context", where)
        categories[category] += 1
        types[act_type or f"({category}, no type)"] += 1
    short = {c: categories[c] for c, m in MIN_PER_CATEGORY.items() if categories[c] < m}
    if short:
        raise ValueError(f"{args.data}: too few items for {short}; the set needs at least {MIN_PER_CATEGORY}")
except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")

print(f"{args.data}: {sum(categories.values())} utterances, ids unique, labels valid")
for c in CATEGORIES:
    print(f"  {c:16s} {categories[c]:4d}")
print("per type:")
for t, k in sorted(types.items()):
    print(f"  {t:26s} {k:4d}")
