"""Paired tests between conditions (or reply sources) over matched units: runs, or snippets.

A unit where either side has no value (an unparsed rating) is left out of the pair, never filled in;
``n`` says how many pairs remain.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np


def slope(values: Sequence[float | None]) -> float | None:
    """Least-squares change per step of the values present (steps 1, 2, ...); ``None`` with fewer than two."""
    points = [(i, v) for i, v in enumerate(values, 1) if v is not None]
    if len(points) < 2:
        return None
    x, y = np.array(points, dtype=float).T
    return float(np.polyfit(x, y, 1)[0])


def paired_tests(a: Sequence[float | None], b: Sequence[float | None]) -> dict:
    """``a - b`` over the units both have: mean difference, Wilcoxon signed-rank and paired t test (two-sided).

    Args:
        a: One value per unit (``None``: missing).
        b: The same units' values on the other side.

    Returns:
        ``{"n", "mean_diff", "wilcoxon_p", "wilcoxon_stat", "ttest_p", "ttest_stat", "note"}``; a test that is
        undefined (fewer than two pairs, all differences zero, or constant differences for t) has ``None``
        statistics and says why in ``note``.
    """
    from scipy.stats import ttest_rel, wilcoxon

    if len(a) != len(b):
        raise ValueError(f"paired_tests needs one value per unit on each side ({len(a)} vs {len(b)})")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None]
    out = {"n": len(pairs), "mean_diff": None, "wilcoxon_stat": None, "wilcoxon_p": None, "ttest_stat": None,
           "ttest_p": None, "note": ""}
    if not pairs:
        out["note"] = "no unit has both values"
        return out
    x, y = np.array(pairs).T
    d = x - y
    out["mean_diff"] = float(d.mean())
    if len(pairs) < 2:
        out["note"] = "fewer than two pairs: no test"
        return out
    if not d.any():
        out["note"] = "all differences zero: no test"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = wilcoxon(x, y)
        out["wilcoxon_stat"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
        if np.ptp(d) == 0:
            out["note"] = "constant differences: t undefined"
        else:
            t = ttest_rel(x, y)
            out["ttest_stat"], out["ttest_p"] = float(t.statistic), float(t.pvalue)
    return out
