"""Multinomial logistic regression in numpy: small, deterministic, fitted at load time.

The act classifier fits two of these on a few hundred example embeddings each time it loads;
full-batch Nesterov-accelerated gradient descent from zero weights with a fixed step gives the
same weights on every run and machine (up to float rounding), with no extra dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SoftmaxRegression:
    """Weights of a fitted model: ``probs(X) = softmax(X @ W + b)``."""

    W: np.ndarray
    b: np.ndarray

    def probs(self, X: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(X, dtype=np.float64) @ self.W + self.b)


def fit_softmax(X: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-4, iterations: int = 1500) -> SoftmaxRegression:
    """Fit L2-regularised multinomial logistic regression.

    Minimises mean cross-entropy + ``l2/2 * ||W||^2`` (the bias is not penalised) with Nesterov's
    accelerated gradient and step ``1/L``, where ``L`` bounds the gradient's Lipschitz constant.

    Args:
        X: ``(n, d)`` features.
        y: ``(n,)`` integer classes in ``[0, n_classes)``.
        n_classes: Number of classes (a class without examples gets a very low bias).
        l2: Strength of the weight penalty.
        iterations: Gradient steps.

    Returns:
        The fitted weights.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    n, d = X.shape
    if len(y) != n:
        raise ValueError(f"fit_softmax got {n} rows of features and {len(y)} labels")
    if n == 0:
        raise ValueError("fit_softmax needs at least one example")
    Y = np.eye(n_classes)[y]
    # Hessian of mean softmax cross-entropy <= 0.5 * (X1'X1)/n, where X1 has a column of ones for the bias.
    X1 = np.hstack([X, np.ones((n, 1))])
    lipschitz = 0.5 * float(np.linalg.eigvalsh(X1.T @ X1 / n)[-1]) + l2
    step = 1.0 / lipschitz
    W, b = np.zeros((d, n_classes)), np.zeros(n_classes)
    W_prev, b_prev = W, b
    for k in range(1, iterations + 1):
        momentum = (k - 1) / (k + 2)
        Wm, bm = W + momentum * (W - W_prev), b + momentum * (b - b_prev)
        G = (softmax(X @ Wm + bm) - Y) / n
        W_prev, b_prev = W, b
        W = Wm - step * (X.T @ G + l2 * Wm)
        b = bm - step * G.sum(axis=0)
    return SoftmaxRegression(W, b)


def fit_softmax_cached(
    X: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-4, iterations: int = 1500
) -> SoftmaxRegression:
    """:func:`fit_softmax`, its weights kept on disk under a key of all its inputs (:mod:`cbtgym.array_cache`).

    For fits on fixed example sets: the same features, labels and settings give the same weights, so a
    new process reads them instead of redoing the gradient steps.
    """
    from cbtgym.array_cache import cached_arrays, content_key

    X, y = np.asarray(X), np.asarray(y)
    key = content_key("fit_softmax", X, y, int(n_classes), float(l2), int(iterations))

    def fit() -> dict[str, np.ndarray]:
        model = fit_softmax(X, y, n_classes, l2, iterations)
        return {"W": model.W, "b": model.b}

    found = cached_arrays("softmax", key, fit, ("W", "b"))
    return SoftmaxRegression(found["W"], found["b"])
