"""Deterministic replies for logic tests and quick experiments."""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

from .base import Backend, Sampling

ReplyFn = Callable[[list[dict[str, str]], Sampling], str]


def stable_index(conversation: list[dict[str, str]], modulo: int, salt: int | None = None) -> int:
    """A hash of the conversation that is the same in every process (unlike ``hash``)."""
    payload = json.dumps([conversation, salt], sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big") % modulo


class ScriptedBackend(Backend):
    """Replies chosen by a rule, never by a model.

    The reply depends only on the conversation (and, for sampled decoding, the seed),
    never on call order, so a batch of N conversations gives the same texts as N calls
    of one: the property the vector-env tests need.

    Args:
        replies: Either a list of texts (one is picked by a stable hash of the
            conversation) or a function ``(conversation, sampling) -> text``.
        name: Name used in caches and logs.
    """

    def __init__(self, replies: Sequence[str] | ReplyFn = ("I see.",), name: str = "scripted") -> None:
        super().__init__()
        if not callable(replies):
            replies = list(replies)
            if not replies:
                raise ValueError("ScriptedBackend(replies=...) needs at least one reply")
        self.replies = replies
        self.name = name

    def _reply(self, conv: list[dict[str, str]], sampling: Sampling) -> str:
        if callable(self.replies):
            return self.replies(conv, sampling)
        salt = None if sampling.greedy else sampling.seed
        return self.replies[stable_index(conv, len(self.replies), salt)]

    def _generate(self, conversations, sampling):
        return [self._reply(c, sampling) for c in conversations], None
