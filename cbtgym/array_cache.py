"""Arrays computed from fixed data, kept on disk under a key made of that data.

Every new process fits the embedded judges again from the example sets shipped in the repository:
embedding a few thousand sentences and fitting the act classifier take seconds each, and a test
run or a training script starts many processes. Those inputs never change between runs unless
the files do, so the results are stored under ``$CBTGYM_CACHE/arrays`` (default
``~/.cache/cbtgym/arrays``), named by a sha256 of everything they were computed from: a changed
example, label or setting is a new key, never a stale hit.

Only for fixed data (example sets, exemplars): user text is never written to disk here.
A file that cannot be read back (truncated, corrupt, another layout) is recomputed and replaced;
files are written to a temporary name and renamed, so a killed writer never leaves half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cbtgym.backends.embedded import cache_root

log = logging.getLogger(__name__)

SUBDIR = "arrays"
#: Bumped when the file layout changes, so old files are keys that are never asked for again.
FORMAT_VERSION = 1

Arrays = dict[str, np.ndarray]


def array_cache_dir() -> Path:
    """``$CBTGYM_CACHE/arrays`` (default ``~/.cache/cbtgym/arrays``)."""
    return cache_root() / SUBDIR


def content_key(*parts: Any) -> str:
    """A sha256 hex digest of ``parts``: strings, numbers, ``None``, numpy arrays, and lists/tuples of them.

    Each part is tagged with its type and length, so ``("ab", "c")`` and ``("a", "bc")`` differ, and an
    array's dtype and shape count as well as its bytes.

    Raises:
        TypeError: For a part of any other type (the message names it).
    """
    h = hashlib.sha256(f"cbtgym-array-cache/{FORMAT_VERSION}".encode())

    def feed(part: Any) -> None:
        if isinstance(part, np.ndarray):
            a = np.ascontiguousarray(part)
            h.update(f"\0array:{a.dtype.str}:{a.shape}:".encode())
            h.update(a.tobytes())
        elif isinstance(part, (list, tuple)):
            h.update(f"\0seq:{len(part)}:".encode())
            for p in part:
                feed(p)
        elif part is None or isinstance(part, (str, int, float, bool, np.integer, np.floating)):
            text = repr(part.item() if isinstance(part, (np.integer, np.floating)) else part)
            h.update(f"\0{type(part).__name__}:{len(text)}:{text}".encode())
        else:
            raise TypeError(f"content_key cannot hash a {type(part).__name__}; pass strings, numbers or numpy arrays")

    for part in parts:
        feed(part)
    return h.hexdigest()


def cached_arrays(name: str, key: str, compute: Callable[[], Mapping[str, np.ndarray]], fields: Sequence[str]) -> Arrays:
    """The arrays stored under ``name`` and ``key``, or ``compute()``'s, stored for next time.

    Args:
        name: What the arrays are (a file-name prefix: letters, digits, ``-`` and ``_``).
        key: :func:`content_key` of everything ``compute`` depends on.
        compute: Builds the arrays (called only on a miss or an unreadable file).
        fields: The names ``compute`` returns; a stored file without all of them is recomputed.

    Returns:
        A dict of the named arrays; identical, on a hit, to what ``compute`` returned when they were stored.

    Raises:
        ValueError: When ``name`` has other characters (it becomes part of a file name).
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"cached_arrays name {name!r} must be letters, digits, '-' or '_'")
    path = array_cache_dir() / f"{name}-{key}.npz"
    found = _read(path)
    if found is not None and all(f in found for f in fields):
        return found
    if found is not None:
        log.warning("array cache: %s lacks some of %s; recomputing it", path, list(fields))
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    _write(path, arrays)
    return arrays


def _read(path: Path) -> Arrays | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        log.warning("array cache: %s is unreadable (%s); recomputing it", path, err)
        return None


def _write(path: Path, arrays: Arrays) -> None:
    # A cache that cannot be written (read-only home, full disk) costs only the time it would have saved.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.warning("array cache: could not write %s (%s); it will be recomputed next time", path, err)
