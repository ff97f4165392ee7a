"""A persistent cache of judge replies, so re-scoring costs nothing and runs replay exactly.

A reply is keyed by what determines it: the backend's name (which names the model), the full
prompt messages and the sampling settings (``Sampling.cache_key()``). The value is the raw text
the backend returned; parsing happens after the cache, so a change to a parser takes effect on
cached replies too, while a change to a prompt, a model or a sampling setting is a miss.

The store is one SQLite file (WAL mode): safe for several threads (one connection per thread)
and good enough for several processes writing now and then (SQLite locks the file; writes
retry for up to ``timeout`` seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from cbtgym.backends.base import Conversation, Sampling
from cbtgym.backends.embedded import cache_root

CACHE_FILE = "judge_cache.sqlite"
#: Set to ``0``/``off``/``false`` to make :func:`default_cache` return ``None`` (no caching).
DISABLE_ENV = "CBTGYM_JUDGE_CACHE"


def cache_key(backend_name: str, messages: Conversation, sampling: Sampling) -> str:
    """The sha256 key of one judge request.

    Args:
        backend_name: ``Backend.name`` (it names the model, e.g. ``hf:/path/to/model``).
        messages: The full prompt, as sent.
        sampling: The decoding settings of this attempt.

    Returns:
        A hex digest, stable across processes and Python versions.
    """
    payload = {
        "backend": backend_name,
        "messages": [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
        "sampling": sampling.cache_key(),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class CacheStats:
    """Lookups answered from the file (``hits``) and lookups that went to the backend (``misses``)."""

    hits: int = 0
    misses: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


class JudgeCache:
    """Raw judge replies on disk, keyed by :func:`cache_key`.

    Args:
        path: The SQLite file; its folder is created. Use :func:`default_cache` for the
            project's default location.
        timeout: Seconds a writer waits for another process's lock before failing.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.stats = CacheStats()
        self._local = threading.local()
        self._stats_lock = threading.Lock()
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, backend TEXT, text TEXT NOT NULL,"
                " created REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads.
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        """Cached texts for those ``keys`` that are present; counts hits and misses."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        con = self._connect()
        for start in range(0, len(unique), 500):  # stay under SQLite's host-parameter limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, text in con.execute(f"SELECT key, text FROM replies WHERE key IN ({marks})", chunk):
                found[key] = text
        with self._stats_lock:
            hits = sum(1 for k in keys if k in found)
            self.stats.hits += hits
            self.stats.misses += len(keys) - hits
        return found

    def get(self, key: str) -> str | None:
        """The cached text for ``key``, or ``None``."""
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, str]] | Mapping[str, str], backend: str = "") -> None:
        """Store ``(key, text)`` pairs; an existing key is overwritten.

        An empty or ``None`` text is a failed generation, not a reply: it is skipped, so the next
        lookup asks the backend again instead of replaying the failure.
        """
        rows = [(k, t) for k, t in (items.items() if isinstance(items, Mapping) else items) if t and t.strip()]
        if not rows:
            return
        now = time.time()
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(
                "INSERT OR REPLACE INTO replies (key, backend, text, created) VALUES (?, ?, ?, ?)",
                [(k, backend, t, now) for k, t in rows],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def clear(self) -> None:
        """Delete every cached reply (the file stays)."""
        self._connect().execute("DELETE FROM replies")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def __getstate__(self) -> dict:
        # Picklable for worker processes: connections are reopened on first use.
        return {"path": self.path, "timeout": self.timeout}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["timeout"])

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"


def default_cache_path() -> Path:
    """``$CBTGYM_CACHE/judge_cache.sqlite`` (default ``~/.cache/cbtgym/judge_cache.sqlite``)."""
    return cache_root() / CACHE_FILE


def default_cache() -> JudgeCache | None:
    """The cache at :func:`default_cache_path`, or ``None`` when ``$CBTGYM_JUDGE_CACHE`` is 0/off/false."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return JudgeCache(default_cache_path())


def resolve_cache(cache: "JudgeCache | str | os.PathLike | bool | None") -> JudgeCache | None:
    """Turn a judge's ``cache=`` argument into a cache or ``None``.

    ``None``/``False``: no cache. ``True`` or ``"default"``: :func:`default_cache`. A path: a
    cache file there. A :class:`JudgeCache`: itself.
    """
    if cache is None or cache is False:
        return None
    if cache is True or cache == "default":
        return default_cache()
    if isinstance(cache, JudgeCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return JudgeCache(cache)
    raise TypeError(
        f"cache must be None, True, 'default', a path or a JudgeCache (got {type(cache).__name__})"
    )
