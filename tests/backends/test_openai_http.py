"""OpenAIBackend against a real local HTTP server serving SmolLM2, with injected faults."""

from __future__ import annotations

import random
import socket

import pytest

from cbtgym.backends import BackendError, OpenAIBackend, Sampling
from cbtgym.backends.openai_http import backoff_delay, parse_retry_after, redact_url
from tests.http_chat_server import ChatServer

KEY_ENV = "CBTGYM_TEST_API_KEY"
SECRET = "sk-test-5ecret-value"
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name a colour."}],
    [
        {"role": "system", "content": "You are a supportive therapist."},
        {"role": "user", "content": "I think I always ruin everything."},
    ],
]
SHORT = Sampling(max_new_tokens=6)
#: Client timeout for the "sleep" fault: above a 6-token reply on a busy CPU, below the stall.
CLIENT_TIMEOUT, STALL = 5.0, 6.5


@pytest.fixture(scope="module")
def server(embedded_hf):
    with ChatServer(embedded_hf, sleep_s=STALL, retry_after="0") as srv:
        yield srv


@pytest.fixture(autouse=True)
def clean(request, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    if "server" in request.fixturenames:
        request.getfixturevalue("server").reset()


def client(server: ChatServer, **kwargs) -> OpenAIBackend:
    kwargs = {"api_key_env": KEY_ENV, "timeout": CLIENT_TIMEOUT, "backoff": 0.01, "max_concurrency": 3, **kwargs}
    return OpenAIBackend(server.base_url, "smollm2", **kwargs)


@pytest.mark.slow
def test_real_text_in_batch_order_with_bearer_key(server, embedded_hf):
    backend = client(server)
    texts = backend.generate(CONVERSATIONS, SHORT)
    # The server runs greedy SmolLM2 one request at a time, so each reply equals a direct call.
    assert texts == [embedded_hf.generate([c], SHORT)[0] for c in CONVERSATIONS]
    assert all(t.strip() for t in texts)
    assert backend.stats.calls == 1 and backend.stats.completion_tokens > 0
    assert len(server.requests) == len(CONVERSATIONS)  # one HTTP request per conversation
    assert {r["headers"]["Authorization"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in repr(backend) and SECRET not in backend.name
    backend.close()
    backend.close()


@pytest.mark.slow
def test_sampling_fields_reach_the_server(server):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    sampling = Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=40, stop=("\n",), json_schema=schema)
    client(server, extra_body={"top_k": 5}).generate(CONVERSATIONS[:2], sampling)
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [40, 41]  # one seed per conversation, so duplicates differ
    for body in bodies:
        assert body["model"] == "smollm2"
        assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (5, 0.7, 0.9, ["\n"])
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        }
        assert body["top_k"] == 5


@pytest.mark.slow
def test_a_prefill_asks_the_server_to_continue_the_reply(server, embedded_hf):
    prefilled = [*CONVERSATIONS[0], {"role": "assistant", "content": "Well"}]
    texts = client(server).generate([CONVERSATIONS[0], prefilled], Sampling(max_new_tokens=8))
    flags = {len(r["body"]["messages"]): (r["body"].get("add_generation_prompt"), r["body"].get("continue_final_message"))
             for r in server.requests}
    assert flags[len(prefilled)] == (False, True) and flags[len(CONVERSATIONS[0])] == (None, None)
    # the local server hands the conversation to HFBackend, which continues the prefill
    assert texts[1] == embedded_hf.generate([prefilled], Sampling(max_new_tokens=8))[0]


@pytest.mark.slow
@pytest.mark.parametrize("faults", [("429", "429"), ("500", "drop"), ("sleep",)])
def test_transient_faults_are_retried(server, embedded_hf, faults):
    server.inject(*faults)
    texts = client(server, max_retries=3).generate(CONVERSATIONS[:1], SHORT)
    assert texts == embedded_hf.generate(CONVERSATIONS[:1], SHORT)
    assert [r["fault"] for r in server.requests] == [*faults, None]


@pytest.mark.slow
def test_faults_beyond_max_retries_raise_a_clear_error(server):
    server.inject("500", "429", "500")
    backend = client(server, max_retries=2)
    with pytest.raises(BackendError) as err:
        backend.generate(CONVERSATIONS[:1], SHORT)
    message = str(err.value)
    assert "after 3 attempts" in message and "HTTP 500" in message
    assert f"{server.base_url}/chat/completions" in message
    assert SECRET not in message
    assert len(server.requests) == 3


@pytest.mark.slow
def test_client_errors_are_not_retried(server):
    backend = client(server, extra_body={"messages": []})  # the server answers 400
    with pytest.raises(BackendError, match="HTTP 400.*not retried"):
        backend.generate(CONVERSATIONS[:1], SHORT)
    assert len(server.requests) == 1


def test_unreachable_server_fails_after_retries():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", api_key_env=KEY_ENV, max_retries=1, backoff=0.01)
    with pytest.raises(BackendError, match=r"after 2 attempts; last error: ConnectError") as err:
        backend.generate(CONVERSATIONS[:1], SHORT)
    assert SECRET not in str(err.value)


def test_secrets_in_the_url_never_show():
    backend = OpenAIBackend("https://user:pw@api.example.com/v1?key=abc", "gpt", api_key_env=KEY_ENV)
    assert backend.name == "openai:https://api.example.com/v1#gpt"
    assert "pw" not in repr(backend) and "abc" not in repr(backend)
    assert redact_url("http://h:8000/v1/chat/completions?x=1#f") == "http://h:8000/v1/chat/completions"


def test_retry_after_and_backoff():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    rng = random.Random(0)
    assert backoff_delay(0, 0.5, 30, rng, retry_after=4.0) == 4.0  # the server's word wins
    assert backoff_delay(0, 0.5, 30, rng, retry_after=100.0) == 30  # but is capped
    for attempt in range(8):
        expected = min(30, 0.5 * 2**attempt)
        assert expected * 0.5 <= backoff_delay(attempt, 0.5, 30, rng) <= expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="http"):
        OpenAIBackend("localhost:8000", "m")
    with pytest.raises(ValueError, match="model"):
        OpenAIBackend("http://localhost:8000/v1", "")
