"""Logistic regression in numpy (multinomial, and one-vs-rest heads): small, deterministic, fitted at load time.

The act classifier fits two multinomial models and the distortion detector one set of one-vs-rest
heads on a few hundred example embeddings each time they load; full-batch Nesterov-accelerated
gradient descent from zero weights with a fixed step gives the same weights on every run and
machine (up to float rounding), with no extra dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, stable for large logits."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class OneVsRestHeads:
    """Weights of independent binary heads: ``probs(X) = sigmoid(X @ W + b)``, one column per label."""

    W: np.ndarray
    b: np.ndarray

    def probs(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(X, dtype=np.float64) @ self.W + self.b)


def _fit_nesterov(X: np.ndarray, Y: np.ndarray, link: Callable[[np.ndarray], np.ndarray], curvature: float, l2: float,
                  iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` minimising mean cross-entropy of ``link(X @ W + b)`` against targets ``Y`` + ``l2/2 * ||W||^2``.

    ``curvature`` bounds the link's Hessian (0.5 for softmax, 0.25 for the sigmoid), which sets the step ``1/L``.
    """
    n, d = X.shape
    X1 = np.hstack([X, np.ones((n, 1))])
    lipschitz = curvature * float(np.linalg.eigvalsh(X1.T @ X1 / n)[-1]) + l2
    step = 1.0 / lipschitz
    W, b = np.zeros((d, Y.shape[1])), np.zeros(Y.shape[1])
    W_prev, b_prev = W, b
    for k in range(1, iterations + 1):
        momentum = (k - 1) / (k + 2)
        Wm, bm = W + momentum * (W - W_prev), b + momentum * (b - b_prev)
        G = (link(X @ Wm + bm) - Y) / n
        W_prev, b_prev = W, b
        W = Wm - step * (X.T @ G + l2 * Wm)
        b = bm - step * G.sum(axis=0)
    return W, b


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
    return SoftmaxRegression(*_fit_nesterov(X, np.eye(n_classes)[y], softmax, 0.5, l2, iterations))


def fit_one_vs_rest(X: np.ndarray, Y: np.ndarray, l2: float = 1e-3, iterations: int = 800) -> OneVsRestHeads:
    """Fit one L2-regularised binary logistic head per column of ``Y`` (all heads in one pass).

    Args:
        X: ``(n, d)`` features.
        Y: ``(n, k)`` 0/1 targets: ``Y[i, j] = 1`` when item ``i`` has label ``j`` (several per row allowed).
        l2: Strength of the weight penalty (the biases are not penalised).
        iterations: Gradient steps.

    Returns:
        The fitted heads.
    """
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or len(Y) != len(X):
        raise ValueError(f"fit_one_vs_rest needs a (n, k) target matrix for {len(X)} rows (got shape {Y.shape})")
    if len(X) == 0:
        raise ValueError("fit_one_vs_rest needs at least one example")
    return OneVsRestHeads(*_fit_nesterov(X, Y, sigmoid, 0.25, l2, iterations))


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
