"""Key/value states of earlier prompts, kept so a prompt that starts with the same tokens skips reading them.

A session's prompt at turn k+1 is its prompt at turn k, the reply and the next turn: with the states of
turn k kept, a model reads only the new tokens. On a CPU reading the prompt is FLOP-bound and, batched,
was most of a patient call (16 sessions of ~600 tokens: ~20 s of a ~30 s call), so this is what batching
alone cannot save. The same idea as vLLM's automatic prefix caching, kept simple: whole sequences, looked
up by longest common token prefix, evicted least-recently-used under a byte budget.

States are only valid for the weights that computed them: the owner clears the cache when they change.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

KV = list[tuple[Any, Any]]  # per layer: (keys, values), each [kv_heads, tokens, head_dim]


@dataclass
class CachedPrefix:
    tokens: Any  # 1-D LongTensor
    kv: KV
    nbytes: int


def common_prefix_length(a: Any, b: Any) -> int:
    """Number of leading tokens two 1-D token tensors share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else n


class PrefixCache:
    """Sequences with their key/value states, under a byte budget.

    Args:
        max_bytes: Budget for the stored states; the least recently used sequences go first.

    Attributes:
        read_tokens: Prompt tokens looked up so far.
        reused_tokens: Of those, tokens whose states came from the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"PrefixCache(max_bytes=...) must be > 0 (got {max_bytes})")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[int, CachedPrefix] = OrderedDict()
        self._next_id = 0
        self.nbytes = 0
        self.read_tokens = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Any) -> tuple[CachedPrefix | None, int]:
        """The stored sequence sharing the longest prefix with ``tokens``, and that length (0: none)."""
        best, best_n, best_id = None, 0, None
        for key, entry in self._entries.items():
            n = common_prefix_length(entry.tokens, tokens)
            if n > best_n:
                best, best_n, best_id = entry, n, key
        if best_id is not None:
            self._entries.move_to_end(best_id)
        return best, best_n

    def count(self, read: int, reused: int) -> None:
        self.read_tokens += read
        self.reused_tokens += reused

    def add(self, tokens: Any, kv: KV) -> None:
        """Store ``tokens`` with their states; sequences it extends are dropped (it answers their lookups too)."""
        for key in [k for k, e in self._entries.items() if len(e.tokens) <= len(tokens)
                    and common_prefix_length(e.tokens, tokens) == len(e.tokens)]:
            self._drop(key)
        if any(common_prefix_length(e.tokens, tokens) == len(tokens) for e in self._entries.values()):
            return  # already covered by a longer sequence
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.max_bytes:
            return
        self._entries[self._next_id] = CachedPrefix(tokens, kv, nbytes)
        self._next_id += 1
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        self.nbytes -= self._entries.pop(key).nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
