"""Any OpenAI-compatible chat-completions server (OpenAI, vLLM serve, llama.cpp, TGI, ...) over HTTP.

One request per conversation, run with bounded concurrency, results kept in batch order. Transient
failures (429, 5xx, connection errors, timeouts) are retried with capped exponential backoff and
jitter, honouring ``Retry-After``; other 4xx answers fail at once. The API key is read from an
environment variable whose *name* is configurable and never appears in names, reprs, logs or errors.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx

from .base import Backend, BackendError, Sampling, apply_stop, is_prefill

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: Characters of a server's body kept in an error message (after the key is masked).
BODY_CHARS = 300
#: The shortest piece of the API key that is masked wherever it appears in error text.
KEY_FRAGMENT = 8


class _EmptyReply(Exception):
    """A 200 answer whose content is null or empty: a server fault, retried like a 5xx."""


def mask_secret(text: str, secret: str | None, limit: int | None = None) -> str:
    """``text`` with every run of ``KEY_FRAGMENT``+ characters that occurs in ``secret`` replaced by ``***``,
    then cut to ``limit`` characters: masking first, so a key across the cut cannot survive in part.

    A server may echo the key whole, cut, or split across lines; each window of ``KEY_FRAGMENT``
    characters found in the key is masked, so no such piece of it is left anywhere.
    """
    if limit is not None:
        # Enough past the cut that a key starting before it is masked whole.
        text = text[: limit + len(secret or "")]
    if secret and len(secret) >= KEY_FRAGMENT:
        grams = {secret[i:i + KEY_FRAGMENT] for i in range(len(secret) - KEY_FRAGMENT + 1)}
        hidden = [False] * len(text)
        for i in range(len(text) - KEY_FRAGMENT + 1):
            if text[i:i + KEY_FRAGMENT] in grams:
                hidden[i:i + KEY_FRAGMENT] = [True] * KEY_FRAGMENT
        out, i = [], 0
        while i < len(text):
            if hidden[i]:
                while i < len(text) and hidden[i]:
                    i += 1
                out.append("***")
            else:
                out.append(text[i])
                i += 1
        text = "".join(out)
    elif secret:
        text = text.replace(secret, "***")
    return text if limit is None else text[:limit]


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (where keys sometimes hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None) -> float:
    """Wait before retry number ``attempt`` (0-based).

    The server's ``Retry-After`` wins when given (still capped, so a bad header cannot hang a run);
    otherwise ``base * 2**attempt`` capped at ``cap``, scaled by a jitter in [0.5, 1] so clients that
    failed together do not retry together.
    """
    if retry_after is not None:
        return min(retry_after, cap)
    return min(cap, base * (2**attempt)) * rng.uniform(0.5, 1.0)


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible HTTP server.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``;
            requests go to ``<base_url>/chat/completions``.
        model: Model name sent in each request.
        api_key_env: Name of the environment variable holding the API key (sent as a Bearer token);
            no ``Authorization`` header when the variable is unset (local servers).
        timeout: Seconds per HTTP request.
        max_retries: Retries after the first attempt for transient failures.
        backoff: First retry delay in seconds; doubles each retry, with jitter.
        max_backoff: Cap on one delay (also on ``Retry-After``).
        max_concurrency: Requests in flight at once.
        extra_body: Extra JSON fields merged into every request (e.g. ``{"top_k": 20}``).
    """

    supports_json_schema = True

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_concurrency: int = 8,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"OpenAIBackend(base_url={redact_url(base_url)!r}) must start with http:// or https://")
        if not model:
            raise ValueError("OpenAIBackend(model=...) must name the model to request")
        if max_retries < 0 or max_concurrency < 1 or timeout <= 0:
            raise ValueError("OpenAIBackend needs max_retries >= 0, max_concurrency >= 1 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        self.name = f"openai:{redact_url(self.base_url)}#{model}"
        self._rng = random.Random()
        self._rng_lock = threading.Lock()
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="cbtgym-openai")

    # -- request building ----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        # Read at call time so a rotated key is picked up; the value never leaves this dict.
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def payload(self, conversation: list[dict[str, str]], sampling: Sampling, seed: int | None) -> dict[str, Any]:
        """The JSON body of one chat-completions request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
        }
        if not sampling.greedy:
            body["top_p"] = sampling.top_p
        if seed is not None:
            body["seed"] = seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": dict(sampling.json_schema), "strict": True},
            }
        if is_prefill(conversation):
            # vLLM's and SGLang's servers continue the final assistant message with these; a server
            # without the extension starts a new reply instead.
            body.update(add_generation_prompt=False, continue_final_message=True)
        body.update(self.extra_body)
        return body

    # -- sending -------------------------------------------------------------------------------

    def _scrub(self, text: str, limit: int | None = None) -> str:
        """Mask the API key (and any 8+-character piece of it) in text that may echo a request, then cut."""
        return mask_secret(text, os.environ.get(self.api_key_env), limit)

    def _post(self, body: dict[str, Any]) -> tuple[str, int | None]:
        """Send one request with retries; return (content, completion_tokens)."""
        attempts = self.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            retry_after = None
            try:
                resp = self._client.post(self.url, json=body, headers=self._headers())
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last_error = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return self._parse(resp)
                    except _EmptyReply as e:
                        last_error = str(e)
                else:
                    last_error = f"HTTP {resp.status_code}: {self._scrub(resp.text, BODY_CHARS)}"
                    if resp.status_code not in RETRYABLE_STATUS:
                        raise BackendError(
                            f"{self.name}: {redact_url(self.url)} answered {self._scrub(last_error)} "
                            "(not retried: the request itself was refused)"
                        )
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if attempt + 1 < attempts:
                with self._rng_lock:
                    delay = backoff_delay(attempt, self.backoff, self.max_backoff, self._rng, retry_after)
                log.info("%s: attempt %d/%d failed (%s); retrying in %.2f s",
                         self.name, attempt + 1, attempts, self._scrub(last_error)[:120], delay)
                time.sleep(delay)
        raise BackendError(
            f"{self.name}: POST {redact_url(self.url)} failed after {attempts} attempts; "
            f"last error: {self._scrub(last_error)}"
        )

    def _parse(self, resp: httpx.Response) -> tuple[str, int | None]:
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(
                f"{self.name}: {redact_url(self.url)} sent a reply without choices[0].message.content "
                f"({type(e).__name__}): {self._scrub(resp.text, BODY_CHARS)}"
            ) from e
        if content is None or not str(content).strip():
            # A server that answers 200 with no text has failed (overload, a crashed worker, a filter);
            # taken as a reply it would become a silent turn that the env plays and the judges score.
            finish = (data["choices"][0] or {}).get("finish_reason") if isinstance(data["choices"][0], dict) else None
            raise _EmptyReply(f"HTTP 200 with {'null' if content is None else 'empty'} message content "
                              f"(finish_reason {finish!r})")
        usage = data.get("usage") or {}
        tokens = usage.get("completion_tokens")
        return str(content), (tokens if isinstance(tokens, int) else None)

    def _generate(self, conversations, sampling):
        seeds = sampling.request_seeds(len(conversations))
        futures = [self._pool.submit(self._post, self.payload(c, sampling, s)) for c, s in zip(conversations, seeds)]
        try:
            results = [f.result() for f in futures]  # in submission order
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        # Servers that ignore "stop" still get their replies cut.
        texts = [apply_stop(text, sampling.stop) for text, _ in results]
        counts = [n for _, n in results]
        return texts, (sum(counts) if all(n is not None for n in counts) else None)

    def close(self) -> None:
        """Close the HTTP connections and the thread pool. Safe to call twice."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
