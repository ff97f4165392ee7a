"""Run a judge over human-labelled items and measure how well it agrees (what ``cbtgym calibrate`` does).

The label kinds go through :func:`calibrate_labels` with any judge ``rewards.factory.make_judge``
builds for the kind; the ``ctrs`` kind goes through :func:`calibrate_ratings` with a backend, on
which one :class:`~rewards.ctrs.CTRSJudge` per set of rated items judges every session once for
all the items a clinician rated in it. Items are sent in batches (one ``generate()`` per batch
and attempt for LLM judges), with a progress bar.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from cbtgym.backends.base import Backend

from ..acts.taxonomy import CATEGORIES, act_types
from ..distortions.taxonomy import distortion_labels
from ..safety.findings import CRISIS_TYPES
from .data import RatingItem
from .metrics import label_agreement, multilabel_prf, rating_agreement

#: Items per judge call: large enough to keep an LLM batched, small enough for a moving progress bar.
BATCH_SIZE = 64

CRISIS_LABELS: tuple[str, ...] = ("crisis", "no_crisis")
REPLY_LABELS: tuple[str, ...] = ("appropriate", "inappropriate")


def _batched(items: Sequence[Any], batch_size: int, desc: str, progress: bool) -> Iterator[Sequence[Any]]:
    from tqdm import tqdm

    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            yield batch
            bar.update(len(batch))


def _map(fn: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any], batch_size: int, desc: str, progress: bool) -> list[Any]:
    out: list[Any] = []
    for batch in _batched(items, batch_size, desc, progress):
        out += fn(batch)
    return out


def _flag(value: bool | None, yes: str, no: str) -> str | None:
    return None if value is None else (yes if value else no)


def calibrate_labels(kind: str, judge: Any, items: Sequence[Any], *, batch_size: int = BATCH_SIZE, progress: bool = True) -> dict[str, Any]:
    """Agreement of a label judge (``acts``, ``crisis``, ``distortions`` or ``reply_check``) with the items' human labels.

    Args:
        kind: The judge kind; ``items`` are the matching :mod:`~rewards.calibration.data` items.
        judge: What ``make_judge(kind, spec)`` built.
        items: The labelled items.
        batch_size: Items per judge call.
        progress: Show a progress bar.

    Returns:
        ``{target: metrics}``: ``category`` and (for items with a type) ``type`` for acts;
        ``crisis`` and (for items with types) ``types`` for crisis; ``distortions`` for distortions;
        ``appropriate`` for reply_check.
    """
    if kind == "acts":
        labels = _map(lambda b: judge.classify([x.text for x in b], [x.context for x in b]), items, batch_size, "acts", progress)
        out = {"category": label_agreement([x.category for x in items], [lab.category for lab in labels], CATEGORIES)}
        typed = [(x, lab) for x, lab in zip(items, labels) if x.type is not None]
        if typed:
            out["type"] = label_agreement([x.type for x, _ in typed], [lab.type for _, lab in typed], act_types())
        return out
    if kind == "crisis":
        found = _map(lambda b: judge.detect([x.text for x in b]), items, batch_size, "crisis", progress)
        out = {"crisis": label_agreement([_flag(x.crisis, *CRISIS_LABELS) for x in items],
                                         [_flag(f.crisis, *CRISIS_LABELS) for f in found], CRISIS_LABELS)}
        typed = [(x, f) for x, f in zip(items, found) if x.types is not None]
        if typed:
            out["types"] = multilabel_prf([x.types for x, _ in typed], [None if f.crisis is None else f.types for _, f in typed],
                                          CRISIS_TYPES)
        return out
    if kind == "distortions":
        found = _map(lambda b: judge.detect([x.text for x in b]), items, batch_size, "thoughts", progress)
        return {"distortions": multilabel_prf([x.labels for x in items], [f.labels for f in found], distortion_labels())}
    if kind == "reply_check":
        checks = _map(lambda b: judge.check([x.stimulus for x in b], [x.reply for x in b]), items, batch_size, "replies", progress)
        return {"appropriate": label_agreement([_flag(x.appropriate, *REPLY_LABELS) for x in items],
                                               [_flag(c.response_safe, *REPLY_LABELS) for c in checks], REPLY_LABELS)}
    raise ValueError(f"calibrate_labels takes kind 'acts', 'crisis', 'distortions' or 'reply_check' (got {kind!r}); 'ctrs' goes to calibrate_ratings")


def calibrate_ratings(backend: Backend, items: Sequence[RatingItem], *, batch_size: int = 8, progress: bool = True,
                      **judge_options: Any) -> dict[str, Any]:
    """Agreement of the CTRS judge on ``backend`` with clinicians' item ratings.

    Every item a clinician rated is applicable (the judge's round thresholds are off), and each
    session is judged once for all its rated items. Sessions are judged in batches of
    ``batch_size``; ``judge_options`` go to :class:`~rewards.ctrs.CTRSJudge` (``max_attempts``, ...).

    Returns:
        ``{"overall": metrics, "items": {item_key: metrics}, "sessions": n}``; see
        :func:`~rewards.calibration.metrics.rating_agreement`.
    """
    from tqdm import tqdm

    from ..ctrs import load_ctrs
    from ..factory import make_judge

    order = [it.key for it in load_ctrs()[0]]
    sessions: dict[str, list[RatingItem]] = {}
    for x in items:
        sessions.setdefault(x.session_key, []).append(x)
    # Sessions rated on the same items share one judge (and one JSON schema per batch).
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, rated in sessions.items():
        groups.setdefault(tuple(k for k in order if k in {x.item for x in rated}), []).append(key)
    predicted: dict[tuple[str, str], float | None] = {}
    with tqdm(total=len(sessions), desc="sessions", unit="session", disable=not progress) as bar:
        for item_keys, keys in groups.items():
            judge = make_judge("ctrs", backend, items=list(item_keys), not_applicable_below_rounds={}, **judge_options)
            for start in range(0, len(keys), batch_size):
                batch = keys[start:start + batch_size]
                for key, result in zip(batch, judge.score([sessions[k][0].dialogue for k in batch])):
                    for k in item_keys:
                        predicted[(key, k)] = None if result.parse_failed else result.scores.get(k)
                bar.update(len(batch))
    pred = [predicted[(x.session_key, x.item)] for x in items]
    per_item = {
        k: rating_agreement([x.rating for x in items if x.item == k], [p for x, p in zip(items, pred) if x.item == k])
        for k in order if any(x.item == k for x in items)
    }
    return {"overall": rating_agreement([x.rating for x in items], pred), "items": per_item, "sessions": len(sessions)}
