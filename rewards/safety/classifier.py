"""A small L2-regularised logistic regression in numpy, trained at load time on the safety data files.

The crisis detector and the reply checker both learn from a few hundred written examples over
MiniLM embeddings. That is too little data for anything bigger and too little to be worth a
stored weight file: training takes milliseconds, is deterministic (full-batch Newton steps from
zero), and keeps the examples, not an opaque binary, as what a reviewer reads and edits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


@dataclass(frozen=True)
class Logistic:
    """One binary logistic model: ``p = sigmoid(x @ w + b)``."""

    w: np.ndarray
    b: float

    def proba(self, x: np.ndarray) -> np.ndarray:
        """P(positive) for each row of ``x``."""
        return _sigmoid(np.asarray(x, dtype=np.float64) @ self.w + self.b)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 25, balanced: bool = True) -> Logistic:
    """Fit a binary logistic regression by Newton's method.

    Args:
        x: ``(n, d)`` features.
        y: ``(n,)`` 0/1 labels; both classes must be present.
        l2: Penalty on the weights (not the bias); larger is smoother.
        iters: Newton steps (the problem is convex; 25 is far past convergence at these sizes).
        balanced: Weight each class to the same total, so a rare type is not drowned by ``none``.

    Raises:
        ValueError: When ``y`` has a single class or the shapes disagree.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"fit_logistic: x must be (n, d) and y (n,), got {x.shape} and {y.shape}")
    n_pos = float(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise ValueError("fit_logistic: y needs both positive and negative examples")
    sw = np.where(y > 0, len(y) / (2 * n_pos), len(y) / (2 * (len(y) - n_pos))) if balanced else np.ones_like(y)
    xb = np.hstack([x, np.ones((len(x), 1))])
    reg = np.full(xb.shape[1], float(l2))
    reg[-1] = 1e-6  # the bias is (almost) free
    theta = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = _sigmoid(xb @ theta)
        grad = xb.T @ (sw * (p - y)) + reg * theta
        hess = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return Logistic(theta[:-1].copy(), float(theta[-1]))
