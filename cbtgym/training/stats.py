"""Bootstrap confidence intervals for per-episode results."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_bootstrap(before: Sequence[float], after: Sequence[float], **kwargs) -> dict:
    """Mean and CI of ``after - before`` over paired episodes (same profile, seed and attitude)."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if b.shape != a.shape:
        raise ValueError(f"paired_bootstrap needs paired samples (got {b.size} and {a.size})")
    d = a - b
    lo, hi = bootstrap_ci(d, **kwargs)
    return {"mean": float(d.mean()), "ci95": [lo, hi]}


def summarize(values: Sequence[float], **kwargs) -> dict:
    lo, hi = bootstrap_ci(values, **kwargs)
    return {"mean": float(np.mean(values)), "ci95": [lo, hi], "n": len(values)}
