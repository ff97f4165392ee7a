"""An export of answers for human rating: variants blinded and shuffled, with a key file to unblind them.

``rating.csv`` has one row per answer: ``item`` (the question's id), ``question``, ``reference``,
``answer_id``, ``answer`` and three empty columns, ``relevance``, ``structure`` and ``helpfulness``,
for 1-5 ratings (CBT-LLM's human evaluation). The answers to one question are in a seeded random
order and their ``answer_id`` (``<item>-A``, ``<item>-B``, ...) says nothing about the variant;
``rating_key.csv`` maps each ``answer_id`` to its variant. Give raters only ``rating.csv``.
"""

from __future__ import annotations

import csv
import random
import string
from pathlib import Path
from typing import Any, Sequence

#: The rating columns, left empty for the raters (1-5 each).
RATINGS: tuple[str, ...] = ("relevance", "structure", "helpfulness")
SHEET = "rating.csv"
KEY = "rating_key.csv"


def answer_ids(item: str, n: int) -> list[str]:
    """``<item>-A``, ``<item>-B``, ...: blinded ids of ``n`` answers (``AA``, ``AB``, ... past 26)."""
    letters = string.ascii_uppercase
    return [f"{item}-{letters[i]}" if n <= 26 else f"{item}-{letters[i // 26]}{letters[i % 26]}" for i in range(n)]


def write_rating_sheet(records: Sequence[dict[str, Any]], out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``rating.csv`` and ``rating_key.csv`` for answer records.

    Args:
        records: ``{"key", "question", "reference", "variant", "answer"}`` each; ``key`` is the question's id.
        out_dir: Where both files go.
        seed: Seed of the answer order (the same records and seed give the same files).

    Returns:
        The paths of the sheet and of the key.
    """
    out_dir = Path(out_dir)
    by_item: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_item.setdefault(r["key"], []).append(r)
    rng = random.Random(seed)
    sheet, key = [], []
    for item, answers in by_item.items():
        answers = sorted(answers, key=lambda r: r["variant"])  # the order before shuffling must not depend on the input's
        rng.shuffle(answers)
        for aid, r in zip(answer_ids(item, len(answers)), answers):
            sheet.append({"item": item, "question": r["question"], "reference": r["reference"], "answer_id": aid,
                          "answer": r["answer"], **{c: "" for c in RATINGS}})
            key.append({"answer_id": aid, "item": item, "variant": r["variant"]})
    paths = (out_dir / SHEET, out_dir / KEY)
    for path, rows, columns in ((paths[0], sheet, ["item", "question", "reference", "answer_id", "answer", *RATINGS]),
                                (paths[1], key, ["answer_id", "item", "variant"])):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return paths
