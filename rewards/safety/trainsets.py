"""The written training sets of the learned safety components, and their train/dev split.

* ``data/crisis_train.jsonl``: client utterances in the crisis-talk format of
  :mod:`rewards.safety.evalsets` (``text``, ``crisis``, ``types``, ``indirect``) plus ``split``;
* ``data/reply_train.jsonl``: (stimulus, reply) pairs in its reply format (``appropriate``,
  ``criteria``) plus ``types`` (the stimulus's crisis types) and ``split``.

``split`` is ``train`` (fitted on) or ``dev`` (thresholds chosen on, never fitted on). Both files
were written for cbtgym, independently of the held-out sets under ``bench/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .evalsets import CRITERIA, load_crisis_talk, load_reply_set
from .patterns import DATA_DIR

CRISIS_TRAIN = DATA_DIR / "crisis_train.jsonl"
REPLY_TRAIN = DATA_DIR / "reply_train.jsonl"
SPLITS = ("train", "dev")


def _split(records: list[dict[str, Any]], path: str | Path, split: str | None) -> list[dict[str, Any]]:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None for both (got {split!r})")
    for r in records:
        if r.get("split") not in SPLITS:
            raise ValueError(f"{path}: item {r.get('id')!r} needs field 'split' set to one of {SPLITS}")
    return [r for r in records if split is None or r["split"] == split]


def crisis_training_items(split: str | None = "train", path: str | Path = CRISIS_TRAIN) -> list[dict[str, Any]]:
    """Records of the crisis training file, restricted to ``split`` (``None``: all).

    Raises:
        ValueError: On a malformed line or an unknown split, naming the file and the item.
    """
    return _split(load_crisis_talk(str(path)), path, split)


def reply_training_items(split: str | None = "train", path: str | Path = REPLY_TRAIN) -> list[dict[str, Any]]:
    """Records of the reply training file, restricted to ``split`` (``None``: all).

    Raises:
        ValueError: On a malformed line, a missing criterion or an unknown split, naming the file and the item.
    """
    records = _split(load_reply_set(str(path)), path, split)
    for r in records:
        missing = [c for c in CRITERIA if not isinstance(r["criteria"].get(c), bool)]
        if missing:
            raise ValueError(f"{path}: item {r.get('id')!r} needs boolean criteria {missing}")
        if r["appropriate"] != all(r["criteria"][c] for c in CRITERIA):
            raise ValueError(f"{path}: item {r.get('id')!r}: 'appropriate' must be true exactly when every criterion holds")
    return records
