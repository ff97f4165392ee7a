"""The one seam between cbtgym and any text generator.

Patients, judges, therapists and trainers all talk to a model through
:class:`Backend.generate`: a *batch* of chat conversations in, one text per
conversation out. Batching is part of the contract (not an optimisation left to
callers) because the vector environment and the judges rely on "one backend call
per step for all sessions" to be fast.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

Message = Mapping[str, str]
Conversation = Sequence[Message]

ROLES = ("system", "user", "assistant")


class BackendError(RuntimeError):
    """A backend could not produce text (after its own retries, where it has any)."""


@dataclass(frozen=True)
class Sampling:
    """How to sample one completion per conversation.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per conversation.
        temperature: 0 means greedy decoding; > 0 samples.
        top_p: Nucleus sampling mass (ignored when greedy).
        seed: Seed for sampled decoding; with the same seed a backend that supports
            seeding returns the same texts.
        stop: Strings that end generation; they are not included in the output.
        json_schema: When set, ask for output that validates against this JSON schema
            (structured decoding where the engine supports it, a plain request otherwise).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"Sampling.max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise ValueError(f"Sampling.temperature must be >= 0; use 0 for greedy (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling.top_p must be in (0, 1] (got {self.top_p})")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def request_seeds(self, n: int) -> list[int | None]:
        """One seed per conversation of a batch of ``n``: ``seed, seed+1, ...`` (all None when unseeded).

        Engines that seed each request separately (vLLM, HTTP servers) use these: one shared seed
        would make identical conversations in a batch (several candidates for one state) identical.
        """
        return [None] * n if self.seed is None else [self.seed + i for i in range(n)]

    def with_(self, **changes: Any) -> "Sampling":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def cache_key(self) -> dict[str, Any]:
        """A JSON-able description, used by caches to key on the sampling settings."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
            "json_schema": self.json_schema,
        }


@dataclass
class BackendStats:
    """Counters every backend keeps; tests use ``calls`` to check batching."""

    calls: int = 0
    conversations: int = 0
    prompt_chars: int = 0
    completion_chars: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, conversations: Sequence[Conversation], texts: Sequence[str], tokens: int | None = None) -> None:
        with self._lock:
            self.calls += 1
            self.conversations += len(conversations)
            self.prompt_chars += sum(len(m["content"]) for c in conversations for m in c)
            self.completion_chars += sum(len(t) for t in texts)
            self.completion_tokens += tokens if tokens is not None else sum(len(t.split()) for t in texts)

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "conversations": self.conversations,
            "prompt_chars": self.prompt_chars,
            "completion_chars": self.completion_chars,
            "completion_tokens": self.completion_tokens,
        }


def validate_conversations(conversations: Sequence[Conversation]) -> list[list[dict[str, str]]]:
    """Check the batch shape once, here, so every engine gets the same clear errors."""
    if isinstance(conversations, (str, bytes)) or not isinstance(conversations, Sequence):
        raise TypeError("generate() takes a list of conversations (each a list of {'role', 'content'} dicts)")
    out: list[list[dict[str, str]]] = []
    for i, conv in enumerate(conversations):
        if isinstance(conv, (str, bytes, Mapping)) or not isinstance(conv, Sequence) or len(conv) == 0:
            raise TypeError(
                f"conversations[{i}] must be a non-empty list of messages; wrap a single conversation in a list"
            )
        msgs = []
        for j, m in enumerate(conv):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise TypeError(f"conversations[{i}][{j}] must be a dict with 'role' and 'content'")
            if m["role"] not in ROLES:
                raise ValueError(f"conversations[{i}][{j}]['role'] must be one of {ROLES} (got {m['role']!r})")
            msgs.append({"role": str(m["role"]), "content": str(m["content"])})
        out.append(msgs)
    return out


class Backend:
    """Base class of every engine: validates input, keeps stats, delegates to ``_generate``.

    Subclasses implement ``_generate(conversations, sampling) -> (texts, completion_tokens|None)``.
    ``name`` identifies the model for caches and logs (e.g. ``hf:/path/to/model``).
    """

    name: str = "backend"
    #: True when the engine enforces ``Sampling.json_schema`` during decoding.
    supports_json_schema: bool = False

    def __init__(self) -> None:
        self.stats = BackendStats()

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling | None = None) -> list[str]:
        """Generate one reply per conversation.

        A conversation that ends with an assistant message is a *prefill*: the engine continues
        that message and returns only the continuation (guided exploration starts replies this way).

        Args:
            conversations: A batch of chat conversations (lists of ``{"role", "content"}``).
            sampling: Decoding settings; defaults to greedy with 128 new tokens.

        Returns:
            One completion text per conversation, in order. ``""`` only when the model ran and produced
            nothing (an in-process engine whose first token was end-of-sequence, or a stop string at once);
            a call that failed raises :class:`BackendError` instead, so no caller can play or cache a
            failure as text. (A server answering 200 with null or empty content has failed: the HTTP
            backend retries it and then raises.)
        """
        convs = validate_conversations(conversations)
        if not convs:
            return []
        sampling = sampling or Sampling()
        texts, tokens = self._generate(convs, sampling)
        if len(texts) != len(convs):
            raise BackendError(f"{self.name} returned {len(texts)} texts for {len(convs)} conversations")
        self.stats.record(convs, texts, tokens)
        return list(texts)

    def _generate(self, conversations: list[list[dict[str, str]]], sampling: Sampling) -> tuple[list[str], int | None]:
        raise NotImplementedError

    def describe(self) -> str:
        """A stable identity of the model behind this backend, for resume records and caches.

        The same in every process that loads the same model (no object ids); free of secrets
        (URLs without user info or query, never an API key). Defaults to ``name``.
        """
        return self.name

    def close(self) -> None:
        """Release engine resources (processes, GPU memory). Safe to call twice."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def is_prefill(conversation: Conversation) -> bool:
    """True when the conversation ends with a partial assistant reply to be continued."""
    return bool(conversation) and conversation[-1]["role"] == "assistant"


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the first stop string; shared by engines without native stop support."""
    cut = len(text)
    for s in stop:
        k = text.find(s)
        if k != -1:
            cut = min(cut, k)
    return text[:cut]
