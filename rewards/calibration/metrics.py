"""Agreement between a judge and human labels: label metrics and ordinal-rating metrics.

Label metrics (:func:`label_agreement`) compare a gold label with the judge's label per item;
a ``None`` prediction is an item the judge could not label (an LLM reply that never parsed).
It is counted as ``unparsed`` and kept out of accuracy, balanced accuracy and kappa, which are
over the labelled items only (``scored``); ``accuracy_all`` counts it as wrong, for a
conservative figure. The confusion matrix keeps it in its own column.

Ordinal metrics (:func:`rating_agreement`) compare two ratings per item on one scale: ICC(2,1)
(Shrout & Fleiss 1979: two-way random effects, absolute agreement, single rater), Spearman's
rho, mean absolute error and exact / within-one agreement. A metric that is undefined for the
data (fewer than two rated items, no variance) is ``None``, never a number made up for it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def per_class_prf(gold: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]) -> dict[str, tuple[float, float, float, int]]:
    """``class -> (precision, recall, F1, support)``; a ``None`` prediction is a miss for its gold class."""
    out = {}
    for c in classes:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        n_pred = sum(p == c for p in pred)
        n_gold = sum(g == c for g in gold)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = (precision, recall, f1, n_gold)
    return out


def confusion(gold: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]) -> list[list[int]]:
    """Rows: gold class; columns: predicted class, then one column for unlabelled (``None``)."""
    index = {c: i for i, c in enumerate(classes)}
    m = [[0] * (len(classes) + 1) for _ in classes]
    for g, p in zip(gold, pred):
        m[index[g]][index[p] if p in index else len(classes)] += 1
    return m


def cohen_kappa(gold: Sequence[str], pred: Sequence[str]) -> float | None:
    """Cohen's kappa of two labellings of the same items; ``None`` when chance agreement is 1 (one label only)."""
    n = len(gold)
    if n == 0:
        return None
    labels = sorted(set(gold) | set(pred))
    observed = sum(g == p for g, p in zip(gold, pred)) / n
    chance = sum((sum(g == c for g in gold) / n) * (sum(p == c for p in pred) / n) for c in labels)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def balanced_accuracy(gold: Sequence[str], pred: Sequence[str | None]) -> float | None:
    """The mean recall over the gold classes present; ``None`` for no items."""
    classes = sorted(set(gold))
    if not classes:
        return None
    return float(np.mean([sum(g == c and p == c for g, p in zip(gold, pred)) / sum(g == c for g in gold) for c in classes]))


def label_agreement(gold: Sequence[str], pred: Sequence[str | None], classes: Sequence[str]) -> dict[str, Any]:
    """Agreement of a judge's labels with gold labels, as a JSON-ready dict.

    Args:
        gold: The human label of each item (each one of ``classes``).
        pred: The judge's label of each item, ``None`` where it gave none (a parse failure).
        classes: Every label, in report order.

    Returns:
        ``n``, ``scored``, ``unparsed``, ``accuracy``, ``balanced_accuracy``, ``kappa`` (over
        the scored items), ``accuracy_all`` (unparsed counted wrong), ``per_label``
        (precision, recall, F1, support and times predicted, over all items) and ``confusion`` (``labels``, rows
        gold, columns predicted then ``unparsed``).

    Raises:
        ValueError: When ``gold`` and ``pred`` differ in length or a gold label is not in ``classes``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"label_agreement got {len(gold)} gold labels for {len(pred)} predictions; pass one per item")
    unknown = sorted(set(gold) - set(classes))
    if unknown:
        raise ValueError(f"gold label(s) {unknown} are not among the classes {list(classes)}")
    pairs = [(g, p) for g, p in zip(gold, pred) if p is not None]
    g_s, p_s = [g for g, _ in pairs], [p for _, p in pairs]
    correct = sum(g == p for g, p in pairs)
    return {
        "n": len(gold),
        "scored": len(pairs),
        "unparsed": len(gold) - len(pairs),
        "accuracy": correct / len(pairs) if pairs else None,
        "balanced_accuracy": balanced_accuracy(g_s, p_s),
        "kappa": cohen_kappa(g_s, p_s),
        "accuracy_all": correct / len(gold) if gold else None,
        "per_label": {
            c: {"precision": p, "recall": r, "f1": f, "support": s, "predicted": sum(x == c for x in pred)}
            for c, (p, r, f, s) in per_class_prf(gold, pred, classes).items()
        },
        "confusion": {"labels": list(classes), "columns": [*classes, "unparsed"], "matrix": confusion(gold, pred, classes)},
    }


def icc_2_1(ratings: Any) -> float | None:
    """ICC(2,1) of an ``n targets x k raters`` matrix (Shrout & Fleiss 1979, case 2, single rater).

    Two-way random effects, absolute agreement: a rater who is consistently one point high
    lowers it (unlike ICC(3,1)). ``None`` with fewer than two targets or raters, or when the
    ratings have no variance at all.
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"icc_2_1 needs a 2-D targets x raters matrix (got shape {x.shape})")
    n, k = x.shape
    if n < 2 or k < 2:
        return None
    grand = x.mean()
    row, col = x.mean(axis=1), x.mean(axis=0)
    msr = k * ((row - grand) ** 2).sum() / (n - 1)
    msc = n * ((col - grand) ** 2).sum() / (k - 1)
    mse = ((x - row[:, None] - col[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    if denominator <= 0:
        return None
    return float((msr - mse) / denominator)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (ties get average ranks); ``None`` with fewer than 2 pairs or a constant side."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def rating_agreement(gold: Sequence[float], pred: Sequence[float | None]) -> dict[str, Any]:
    """Agreement of a judge's ratings with gold ratings, as a JSON-ready dict.

    Args:
        gold: The human rating of each item.
        pred: The judge's rating of each item, ``None`` where it gave none (a parse failure).

    Returns:
        ``n``, ``scored``, ``unparsed``, and over the scored items: ``icc_2_1``, ``spearman``,
        ``mae``, ``exact`` and ``within_1`` (shares of items), ``gold_mean``, ``judge_mean``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"rating_agreement got {len(gold)} gold ratings for {len(pred)} predictions; pass one per item")
    pairs = [(float(g), float(p)) for g, p in zip(gold, pred) if p is not None]
    g, p = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    diff = np.abs(g - p)
    return {
        "n": len(gold),
        "scored": len(pairs),
        "unparsed": len(gold) - len(pairs),
        "icc_2_1": icc_2_1(np.column_stack([g, p])) if pairs else None,
        "spearman": spearman(list(g), list(p)),
        "mae": float(diff.mean()) if pairs else None,
        "exact": float((diff == 0).mean()) if pairs else None,
        "within_1": float((diff <= 1).mean()) if pairs else None,
        "gold_mean": float(g.mean()) if pairs else None,
        "judge_mean": float(p.mean()) if pairs else None,
    }


def multilabel_prf(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str] | None], classes: Sequence[str]) -> dict[str, Any]:
    """Agreement of label *sets* (each class judged present or absent per item; an empty set is "none").

    Items whose prediction is ``None`` (unparsed) are left out of every rate and counted.

    Returns:
        ``n``, ``scored``, ``unparsed``; over the scored items: ``exact`` (share whose predicted set
        equals the gold set), ``any_match`` (share sharing at least one label with the gold set, or
        with both sets empty), ``micro_precision``/``micro_recall``/``micro_f1`` (over all item-label
        decisions), ``macro_f1`` (mean F1 of the classes that occur in the gold or predicted sets) and
        ``per_label`` (precision, recall, F1, support, times predicted).
    """
    pairs = [(set(g), set(p)) for g, p in zip(gold, pred) if p is not None]
    per = {}
    for c in classes:
        tp = sum(c in g and c in p for g, p in pairs)
        n_pred = sum(c in p for _, p in pairs)
        n_gold = sum(c in g for g, _ in pairs)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[c] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold, "predicted": n_pred}
    tp = sum(len(g & p) for g, p in pairs)
    n_pred, n_gold = sum(len(p) for _, p in pairs), sum(len(g) for g, _ in pairs)
    occurring = [m["f1"] for m in per.values() if m["support"] or m["predicted"]]
    return {
        "n": len(gold),
        "scored": len(pairs),
        "unparsed": len(gold) - len(pairs),
        "exact": sum(g == p for g, p in pairs) / len(pairs) if pairs else None,
        "any_match": sum(bool(g & p) or g == p for g, p in pairs) / len(pairs) if pairs else None,
        "micro_precision": tp / n_pred if n_pred else None,
        "micro_recall": tp / n_gold if n_gold else None,
        "micro_f1": 2 * tp / (n_pred + n_gold) if n_pred + n_gold else None,
        "macro_f1": float(np.mean(occurring)) if occurring else None,
        "per_label": per,
    }
