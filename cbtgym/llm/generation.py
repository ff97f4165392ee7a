"""Batched generation with a parser, retries and a cache in front: what every LLM caller shares.

:func:`generate_parsed` sends all N conversations in one ``generate()`` call on the first attempt
and only the unparseable ones on each retry; :func:`generate_cached` puts a
:class:`~cbtgym.llm.cache.JudgeCache` in front of a backend. A failed generation (an empty or
``None`` text, or a call that raised) is never cached, so a server that recovers is asked again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from cbtgym.backends.base import Backend, Conversation, Sampling

from .cache import JudgeCache, cache_key, resolve_cache

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Attempted(Generic[T]):
    """The outcome of judging one conversation.

    Attributes:
        value: The parsed value, or ``None`` when every attempt failed to parse.
        raw: The raw text of each attempt, in order.
        attempts: How many attempts were made (``len(raw)``).
        cached: For each attempt, whether its text came from the cache.
        errors: Why each failed attempt failed (parser exceptions; ``"unparseable"`` otherwise).
    """

    value: T | None = None
    raw: list[str] = field(default_factory=list)
    attempts: int = 0
    cached: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def last_raw(self) -> str:
        return self.raw[-1] if self.raw else ""


def attempt_sampling(sampling: Sampling, attempt: int, retry_temperature: float) -> Sampling:
    """The sampling for attempt ``attempt`` (1-based).

    Greedy decoding would repeat the same unparseable text, so retries sample at
    ``retry_temperature`` with a seed derived from the attempt number (keeps runs replayable
    and gives every attempt its own cache key).
    """
    if attempt == 1:
        return sampling
    temperature = sampling.temperature if not sampling.greedy else retry_temperature
    return sampling.with_(temperature=temperature, seed=(sampling.seed or 0) + attempt - 1)


def generate_cached(
    backend: Backend, conversations: Sequence[Conversation], sampling: Sampling, cache: JudgeCache | None
) -> list[tuple[str, bool]]:
    """``backend.generate`` with a cache in front: ``(text, from_cache)`` per conversation.

    Only cache misses reach the backend, in one call; none at all when everything is cached.
    A failed generation is returned as ``""`` and never stored: an empty or ``None`` text (a
    server answering ``"content": null``) would otherwise replay the failure forever after the
    server recovers, and a call that raises stores nothing.
    """
    if not conversations:
        return []
    if cache is None:
        return [(t or "", False) for t in backend.generate(conversations, sampling)]
    keys = [cache_key(backend.name, c, sampling) for c in conversations]
    found = cache.get_many(keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    fresh: dict[str, str] = {}
    if missing:
        texts = backend.generate([conversations[i] for i in missing], sampling)
        if len(texts) != len(missing):
            raise ValueError(f"backend {backend.name!r} returned {len(texts)} texts for {len(missing)} conversations")
        fresh = {keys[i]: t or "" for i, t in zip(missing, texts)}
        cache.put_many(fresh, backend=backend.name)
    miss = set(missing)
    return [(fresh[k] if i in miss else found[k], i not in miss) for i, k in enumerate(keys)]


def generate_parsed(
    backend: Backend,
    prompts: Sequence[Conversation],
    parse: Callable[[str], T | None] | Sequence[Callable[[str], T | None]],
    sampling: Sampling | None = None,
    max_attempts: int = 3,
    cache: JudgeCache | None = None,
    retry_temperature: float = 0.7,
) -> list[Attempted[T]]:
    """Generate for N conversations and parse each reply, with batched retries.

    Attempt 1 sends all N prompts in one ``generate()`` call; each later attempt sends only the
    prompts whose reply did not parse, again in one call (see :func:`attempt_sampling` for how
    retries decode). A parser that raises counts as a failed parse (the message is kept).

    Args:
        backend: The judge model.
        prompts: One chat conversation per item.
        parse: ``text -> value`` (``None`` = unparseable); one function for all prompts or one per prompt.
        sampling: Decoding settings of the first attempt (put the JSON schema here).
        max_attempts: Attempts per prompt, >= 1.
        cache: Consulted before each call (see :mod:`cbtgym.llm.cache`); ``None`` disables it.
        retry_temperature: Temperature of retries when ``sampling`` is greedy.

    Returns:
        One :class:`Attempted` per prompt, in order.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 (got {max_attempts})")
    if callable(parse):
        parsers: Sequence[Callable[[str], T | None]] = [parse] * len(prompts)
    else:
        parsers = list(parse)
        if len(parsers) != len(prompts):
            raise ValueError(f"got {len(parsers)} parse functions for {len(prompts)} prompts; give one or one per prompt")
    sampling = sampling or Sampling()
    results: list[Attempted[T]] = [Attempted() for _ in prompts]
    pending = list(range(len(prompts)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        replies = generate_cached(
            backend, [prompts[i] for i in pending], attempt_sampling(sampling, attempt, retry_temperature), cache
        )
        still: list[int] = []
        for i, (text, hit) in zip(pending, replies):
            res = results[i]
            res.attempts, res.raw, res.cached = attempt, res.raw + [text], res.cached + [hit]
            try:
                value = parsers[i](text)
                error = "unparseable"
            except Exception as e:  # a parser choking on odd output is a parse failure, not a crash
                value, error = None, f"{type(e).__name__}: {e}"
            if value is None:
                res.errors.append(error)
                still.append(i)
            else:
                res.value = value
        if still:
            log.debug("%s: %d of %d replies unparseable on attempt %d", backend.name, len(still), len(pending), attempt)
        pending = still
    return results


class LLMCaller:
    """What every LLM judge and generator holds: backend, decoding, retries, cache, structured output.

    Subclasses build prompts and parsers; :meth:`call` sends them through :func:`generate_parsed`.

    Args:
        backend: The model (any :class:`~cbtgym.backends.base.Backend`).
        sampling: Decoding settings of the first attempt (default: greedy,
            ``default_max_new_tokens`` new tokens).
        max_attempts: Attempts per item before it is reported as a failure (>= 1).
        cache: ``None``/``False`` (off), ``True``/``"default"``, a path or a
            :class:`~cbtgym.llm.cache.JudgeCache` (see :func:`~cbtgym.llm.cache.resolve_cache`).
        use_json_schema: Put the caller's JSON schema into the sampling (enforced by backends with
            ``supports_json_schema``, ignored by others).
        retry_temperature: Temperature of retries when the first attempt is greedy.
    """

    default_max_new_tokens = 512

    def __init__(
        self,
        backend: Backend,
        *,
        sampling: Sampling | None = None,
        max_attempts: int = 3,
        cache: "JudgeCache | str | os.PathLike[str] | bool | None" = None,
        use_json_schema: bool = True,
        retry_temperature: float = 0.7,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 (got {max_attempts})")
        self.backend = backend
        self.sampling = sampling or Sampling(max_new_tokens=self.default_max_new_tokens)
        self.max_attempts = max_attempts
        self.cache = resolve_cache(cache)
        self.use_json_schema = use_json_schema
        self.retry_temperature = retry_temperature

    def call(
        self,
        prompts: Sequence[Conversation],
        parse: Callable[[str], T | None] | Sequence[Callable[[str], T | None]],
        schema: Mapping[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> list[Attempted[T]]:
        """:func:`generate_parsed` with this caller's backend, retries and cache.

        ``sampling`` replaces :attr:`sampling` for this call (a second stage with its own token
        budget); ``schema`` is added to it unless ``use_json_schema`` is off.
        """
        base = sampling or self.sampling
        return generate_parsed(
            self.backend, prompts, parse,
            base.with_(json_schema=schema) if schema is not None and self.use_json_schema else base,
            max_attempts=self.max_attempts, cache=self.cache, retry_temperature=self.retry_temperature,
        )
