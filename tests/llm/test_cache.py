"""The persistent judge cache: keys, replay with zero backend calls, misses on any change."""

from __future__ import annotations

import json
import threading

import pytest

from cbtgym.backends.base import Sampling
from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.llm.cache import JudgeCache, cache_key, default_cache, default_cache_path, resolve_cache
from cbtgym.llm.generation import generate_parsed
from cbtgym.llm.json_reply import extract_json

MSGS = [{"role": "user", "content": "Rate this."}]


def counting_backend(name: str = "scripted"):
    return ScriptedBackend(lambda conv, s: json.dumps({"score": len(conv[-1]["content"])}), name=name)


def parse(text):
    return (extract_json(text) or {}).get("score")


def prompts(n: int):
    return [[{"role": "user", "content": "x" * (i + 1)}] for i in range(n)]


def test_key_depends_on_backend_messages_and_sampling():
    base = cache_key("m", MSGS, Sampling())
    assert base == cache_key("m", [dict(m) for m in MSGS], Sampling())
    assert base != cache_key("other-model", MSGS, Sampling())
    assert base != cache_key("m", [{"role": "user", "content": "Rate this!"}], Sampling())
    assert base != cache_key("m", MSGS, Sampling(max_new_tokens=64))
    assert base != cache_key("m", MSGS, Sampling(json_schema={"type": "object"}))


def test_second_scoring_makes_zero_backend_calls_and_replays(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    backend = counting_backend()
    first = generate_parsed(backend, prompts(4), parse, cache=cache)
    assert backend.stats.calls == 1 and cache.stats.as_dict() == {"hits": 0, "misses": 4}

    again = generate_parsed(backend, prompts(4), parse, cache=JudgeCache(tmp_path / "c.sqlite"))  # a new process, same file
    assert backend.stats.calls == 1  # nothing reached the backend
    assert [r.value for r in again] == [r.value for r in first] == [1, 2, 3, 4]
    assert all(r.cached == [True] for r in again)


def test_partial_hits_send_only_the_misses_in_one_call(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    backend = counting_backend()
    generate_parsed(backend, prompts(2), parse, cache=cache)
    generate_parsed(backend, prompts(5), parse, cache=cache)
    assert backend.stats.calls == 2 and backend.stats.conversations == 2 + 3


@pytest.mark.parametrize("change", ["sampling", "model"])
def test_a_different_sampling_or_model_is_a_miss(tmp_path, change):
    cache = JudgeCache(tmp_path / "c.sqlite")
    generate_parsed(counting_backend(), prompts(2), parse, Sampling(), cache=cache)
    backend = counting_backend("other-model" if change == "model" else "scripted")
    sampling = Sampling(max_new_tokens=7) if change == "sampling" else Sampling()
    generate_parsed(backend, prompts(2), parse, sampling, cache=cache)
    assert backend.stats.calls == 1 and cache.stats.misses == 4


def test_failed_attempts_replay_too(tmp_path):
    # Greedy garbage, sampled retries valid: a replay must follow the same path without the backend.
    def reply(conv, s):
        return "not json" if s.greedy else '{"score": 1}'

    cache = JudgeCache(tmp_path / "c.sqlite")
    backend = ScriptedBackend(reply)
    [first] = generate_parsed(backend, prompts(1), parse, cache=cache)
    [again] = generate_parsed(backend, prompts(1), parse, cache=cache)
    assert backend.stats.calls == 2  # only the first run's two attempts
    assert first.raw == again.raw == ["not json", '{"score": 1}'] and again.value == 1


def test_threads_share_one_cache(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    errors = []

    def work(k):
        try:
            cache.put_many({f"k{k}-{i}": f"v{i}" for i in range(20)})
            assert cache.get(f"k{k}-3") == "v3"
        except Exception as e:  # surfaced below: assertion errors in threads are otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 120


def test_default_location_and_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    monkeypatch.delenv("CBTGYM_JUDGE_CACHE", raising=False)
    assert default_cache_path() == tmp_path / "judge_cache.sqlite"
    assert default_cache().path == tmp_path / "judge_cache.sqlite"
    assert isinstance(resolve_cache(True), JudgeCache) and resolve_cache(None) is None and resolve_cache(False) is None
    assert resolve_cache(tmp_path / "x.sqlite").path == tmp_path / "x.sqlite"
    monkeypatch.setenv("CBTGYM_JUDGE_CACHE", "off")
    assert default_cache() is None
    with pytest.raises(TypeError, match="cache must be"):
        resolve_cache(3)


class FlakyServer:
    """Answers ``failed`` (``"content": null`` comes through as ``None``) until it recovers."""

    name = "openai:flaky"

    def __init__(self, failed):
        self.failed, self.down, self.calls = failed, True, 0

    def generate(self, conversations, sampling):
        self.calls += 1
        return [self.failed if self.down else '{"score": 4}' for _ in conversations]


@pytest.mark.parametrize("failed", [None, "", "  \n"])
def test_a_null_or_empty_reply_is_not_cached_and_the_recovered_server_is(tmp_path, failed):
    # Caching the failure would replay it forever after the server recovers.
    server = FlakyServer(failed)
    cache = JudgeCache(tmp_path / "c.sqlite")
    [down] = generate_parsed(server, prompts(1), parse, cache=cache, max_attempts=1)
    assert not down.ok and down.raw == [failed or ""] and len(cache) == 0
    server.down = False
    [up] = generate_parsed(server, prompts(1), parse, cache=cache, max_attempts=1)
    assert up.value == 4 and up.cached == [False] and server.calls == 2 and len(cache) == 1
    [replay] = generate_parsed(server, prompts(1), parse, cache=cache, max_attempts=1)
    assert replay.value == 4 and replay.cached == [True] and server.calls == 2


def test_a_call_that_raises_stores_nothing(tmp_path):
    def down(conv, s):
        raise ConnectionError("server unavailable")

    cache = JudgeCache(tmp_path / "c.sqlite")
    with pytest.raises(ConnectionError):
        generate_parsed(ScriptedBackend(down), prompts(2), parse, cache=cache)
    assert len(cache) == 0
    cache.put_many({"k": None, "k2": "", "k3": "text"})  # type: ignore[dict-item]
    assert cache.get("k") is None and cache.get("k2") is None and cache.get("k3") == "text"
