"""Server faults stay faults: null/empty content is retried then an error, never cached or played,
and no 8-character piece of the API key reaches any error text."""

from __future__ import annotations

import random

import pytest

from cbtgym.backends import BackendError, OpenAIBackend, Sampling
from cbtgym.backends.openai_http import BODY_CHARS, KEY_FRAGMENT, mask_secret
from tests.reliability.fault_server import FaultServer, completion

KEY_ENV = "CBTGYM_RELIAB_TEST_KEY"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
KEY = "sk-proj-" + "".join(random.Random(7).choices(_ALNUM, k=160))  # 168 characters, like a real project key
CONV = [[{"role": "user", "content": "How have you been?"}]]


def client(server: FaultServer, retries: int = 2) -> OpenAIBackend:
    return OpenAIBackend(server.base_url, "m", api_key_env=KEY_ENV, max_retries=retries, backoff=0.001, max_backoff=0.01)


def fragments(key: str) -> set[str]:
    return {key[i:i + KEY_FRAGMENT] for i in range(len(key) - KEY_FRAGMENT + 1)}


def assert_no_fragment(text: str) -> None:
    leaked = [f for f in fragments(KEY) if f in text]
    assert not leaked, f"{len(leaked)} 8-character pieces of the key in: {text[:200]!r}"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.mark.parametrize("content", [None, "", "   \n"])
def test_null_or_empty_content_is_retried_then_a_clear_error(content):
    with FaultServer((200, completion(content))) as server:
        backend = client(server, retries=2)
        with pytest.raises(BackendError) as err:
            backend.generate(CONV, Sampling(max_new_tokens=8))
        assert len(server.requests) == 3  # the first attempt and two retries
        message = str(err.value)
        assert "failed after 3 attempts" in message
        assert ("null" if content is None else "empty") + " message content" in message
        assert backend.stats.calls == 0  # nothing was recorded as a reply
        backend.close()


def test_a_null_reply_then_a_real_one_gives_the_real_one():
    with FaultServer((200, completion(None)), (200, completion("I have been tired."))) as server:
        backend = client(server)
        assert backend.generate(CONV, Sampling(max_new_tokens=8)) == ["I have been tired."]
        assert len(server.requests) == 2
        backend.close()


def test_null_content_is_never_cached(tmp_path):
    # The judges' cache sits in front of the backend: a failed call raises before anything is
    # stored, so the next call reaches the server again and gets the real text.
    from cbtgym.llm.cache import JudgeCache
    from cbtgym.llm.generation import generate_cached

    cache = JudgeCache(tmp_path / "cache.sqlite")
    sampling = Sampling(max_new_tokens=8)
    with FaultServer((200, completion(None)), (200, completion(None)), (200, completion("Real."))) as server:
        backend = client(server, retries=0)
        for _ in range(2):
            with pytest.raises(BackendError):
                generate_cached(backend, CONV, sampling, cache)
            assert len(cache) == 0
        assert generate_cached(backend, CONV, sampling, cache) == [("Real.", False)]
        assert generate_cached(backend, CONV, sampling, cache) == [("Real.", True)]
        assert len(server.requests) == 3
        backend.close()
    cache.close()


# Where the key starts in the body: before the cut, across it (100 of 168 characters inside, as in
# the report), just before it, at it, far past it.
@pytest.mark.parametrize("position", [0, BODY_CHARS - 100, BODY_CHARS - 9, BODY_CHARS - 1, BODY_CHARS, 5000])
@pytest.mark.parametrize("status", [400, 500])
def test_no_piece_of_the_key_in_any_error(position, status):
    # The server echoes the key at any offset of a body of any length; a retried 500 and a refused
    # 400 both quote the body.
    body = "x" * position + KEY + " is not a valid key for this project" + "y" * 400
    with FaultServer((status, body)) as server:
        backend = client(server, retries=1)
        with pytest.raises(BackendError) as err:
            backend.generate(CONV, Sampling(max_new_tokens=8))
        assert_no_fragment(str(err.value))
        backend.close()


def test_a_broken_200_reply_quoting_the_key_leaks_nothing():
    with FaultServer((200, "{not json " + KEY[:100] + " ... " + KEY[100:])) as server:
        backend = client(server)
        with pytest.raises(BackendError) as err:
            backend.generate(CONV, Sampling(max_new_tokens=8))
        assert_no_fragment(str(err.value))
        backend.close()


def test_mask_secret_masks_every_fragment_whatever_the_cut():
    rng = random.Random(0)
    for _ in range(200):
        start, end = sorted(rng.sample(range(len(KEY) + 1), 2))
        piece = KEY[start:end]
        text = "a" * rng.randrange(0, 400) + piece + "b" * rng.randrange(0, 50)
        for limit in (None, BODY_CHARS, rng.randrange(1, 600)):
            out = mask_secret(text, KEY, limit)
            assert_no_fragment(out)
            assert limit is None or len(out) <= limit
    assert mask_secret("plain text", KEY) == "plain text"
    assert mask_secret("see " + KEY + " here", KEY) == "see *** here"
