"""HFBackend on the real embedded SmolLM2: batching, seeding, stop strings, loaded and peft models."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from cbtgym.backends import BackendError, HFBackend, Sampling

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a supportive therapist."},
        {"role": "user", "content": "I keep thinking I will fail my exam tomorrow and I cannot sleep."},
    ],
    [{"role": "user", "content": "Say hello."}],
    [
        {"role": "user", "content": "I feel nobody at work likes me."},
        {"role": "assistant", "content": "That sounds painful. What makes you think so?"},
        {"role": "user", "content": "Nobody invited me to lunch today."},
    ],
]
GREEDY = Sampling(max_new_tokens=20)


@contextlib.contextmanager
def peak_rss_growth(every_s: float = 0.02):
    """Samples this process's resident memory while the block runs; yields a reader of the peak growth in bytes."""
    import psutil

    proc = psutil.Process()
    start, peak, done = proc.memory_info().rss, [0], threading.Event()

    def sample():
        while not done.wait(every_s):
            peak[0] = max(peak[0], proc.memory_info().rss - start)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0]
    finally:
        done.set()
        thread.join()


def test_batch_gives_real_text_in_order_equal_to_one_by_one(embedded_hf):
    calls = embedded_hf.stats.calls
    batched = embedded_hf.generate(CONVERSATIONS, GREEDY)
    assert embedded_hf.stats.calls == calls + 1  # one call for the whole batch
    assert len(batched) == len(CONVERSATIONS)
    assert all(t.strip() for t in batched)
    assert "Paris" in batched[0]
    one_by_one = [embedded_hf.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert batched == one_by_one


def test_chunking_keeps_order(embedded_hf):
    small = HFBackend(embedded_hf.model, embedded_hf.tokenizer, batch_size=3)  # chunks of 3 + 1
    assert small.generate(CONVERSATIONS, GREEDY) == embedded_hf.generate(CONVERSATIONS, GREEDY)
    assert small.stats.completion_tokens > 0


def test_repeated_prompts_share_one_prefill_and_match_unshared_generation(embedded_hf):
    # k copies of each state (candidate sampling) take the shared-prefix path; greedy output must
    # equal plain generation of each prompt, for every copy, in the caller's order.
    repeated = [c for c in CONVERSATIONS for _ in range(3)]
    shared = embedded_hf.generate(repeated, GREEDY)
    assert shared == [t for t in embedded_hf.generate(CONVERSATIONS, GREEDY) for _ in range(3)]
    interleaved = CONVERSATIONS + CONVERSATIONS[::-1]
    assert embedded_hf.generate(interleaved, GREEDY) == [embedded_hf.generate([c], GREEDY)[0] for c in interleaved]
    sampled = embedded_hf.generate(repeated, Sampling(max_new_tokens=16, temperature=1.0, seed=5))
    assert all(t.strip() for t in sampled) and len(set(sampled[:3])) > 1


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(embedded_hf):
    sampled = Sampling(max_new_tokens=16, temperature=1.0, seed=11)
    rng_before = torch.get_rng_state()
    first = embedded_hf.generate(CONVERSATIONS, sampled)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert embedded_hf.generate(CONVERSATIONS, sampled) == first
    assert embedded_hf.generate(CONVERSATIONS, sampled.with_(seed=12)) != first


def test_a_prefilled_reply_is_continued(embedded_hf):
    # Greedy decoding is prefix-consistent: prefilling the first token of the greedy reply gives the rest of it.
    full = embedded_hf.generate(CONVERSATIONS, GREEDY)
    tok = embedded_hf.tokenizer
    openings = [tok.decode(tok.encode(t, add_special_tokens=False)[:1]) for t in full]
    prefilled = [[*c, {"role": "assistant", "content": o}] for c, o in zip(CONVERSATIONS, openings)]
    mixed = embedded_hf.generate([prefilled[0], CONVERSATIONS[1], prefilled[2], prefilled[3]],
                                 GREEDY.with_(max_new_tokens=GREEDY.max_new_tokens - 1))
    assert full[1].startswith(mixed[1]) and len(mixed[1]) > len(full[1]) / 2  # one token shorter
    for i in (0, 2, 3):
        assert (openings[i] + mixed[i]).strip() == full[i].strip()


def test_candidates_for_one_state_differ(embedded_hf):
    texts = embedded_hf.generate([CONVERSATIONS[1]] * 4, Sampling(max_new_tokens=16, temperature=1.0, seed=3))
    assert len(set(texts)) > 1


def test_stop_strings_cut_the_reply(embedded_hf):
    conv = [CONVERSATIONS[1]]
    full = embedded_hf.generate(conv, GREEDY)[0]
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[3]  # a string known to occur in the greedy reply
    cut = embedded_hf.generate(conv, GREEDY.with_(stop=(stop, "never-occurs")))[0]
    assert cut == full[: full.index(stop)]
    assert stop not in cut


def test_train_mode_of_a_borrowed_model_is_restored(embedded_hf):
    embedded_hf.model.train()
    try:
        assert embedded_hf.generate(CONVERSATIONS[:1], GREEDY)[0].strip()
        assert embedded_hf.model.training
    finally:
        embedded_hf.model.eval()


def test_peft_model_and_saved_adapter(embedded_dir, embedded_hf, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    # LoRA's B starts at zero, so an untrained adapter must reproduce the base model exactly.
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    expected = embedded_hf.generate(CONVERSATIONS[:2], GREEDY)

    wrapped = HFBackend(lora, embedded_hf.tokenizer)
    assert wrapped.model is lora and wrapped.tokenizer is embedded_hf.tokenizer
    assert wrapped.generate(CONVERSATIONS[:2], GREEDY) == expected

    lora.save_pretrained(tmp_path / "adapter")
    from_disk = HFBackend(embedded_dir, adapter=tmp_path / "adapter")
    assert from_disk.name == f"hf:{embedded_dir}+lora:{tmp_path / 'adapter'}"
    assert from_disk.generate(CONVERSATIONS[:2], GREEDY) == expected

    later = HFBackend(embedded_dir, prefix_cache_gb=0.5)
    later.generate(CONVERSATIONS[:1], GREEDY)
    assert len(later.prefix_cache) == 1
    later.load_adapter(tmp_path / "adapter")  # new weights: the old ones' states must go
    assert len(later.prefix_cache) == 0
    assert later.generate(CONVERSATIONS[:2], GREEDY) == expected


def test_the_next_turn_reads_only_its_new_tokens_and_says_the_same(embedded_hf):
    uncached = HFBackend(embedded_hf.model, embedded_hf.tokenizer)  # a handed-in model: its owner may train it
    assert uncached.prefix_cache is None and embedded_hf.prefix_cache is not None
    cache = embedded_hf.prefix_cache
    cache.clear()
    first = embedded_hf.generate(CONVERSATIONS, GREEDY)
    assert first == uncached.generate(CONVERSATIONS, GREEDY)
    follow = [[*c, {"role": "assistant", "content": r}, {"role": "user", "content": "Why do you say that?"}]
              for c, r in zip(CONVERSATIONS, first)]
    read, reused = cache.read_tokens, cache.reused_tokens
    assert embedded_hf.generate(follow, GREEDY) == uncached.generate(follow, GREEDY)
    tok = embedded_hf.tokenizer
    earlier = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in embedded_hf.prompts(CONVERSATIONS))
    now = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in embedded_hf.prompts(follow))
    assert cache.read_tokens - read == now
    assert earlier <= cache.reused_tokens - reused < now  # every earlier prompt (and some of its reply) came from the cache


def test_cached_states_give_the_logits_of_a_whole_read(embedded_hf):
    from cbtgym.backends.kv_decoding import KVDecoder
    from cbtgym.backends.prefix_cache import PrefixCache

    tok = embedded_hf.tokenizer
    ids = torch.tensor(tok(embedded_hf.prompts(CONVERSATIONS[3:])[0], add_special_tokens=False)["input_ids"])
    with embedded_hf._inference(None):
        whole_logits, whole_kv = KVDecoder(embedded_hf.model)._read(ids)
        cache = PrefixCache(2**30)
        cache.add(ids[:20], [(k[:, :20], v[:, :20]) for k, v in whole_kv])
        part_logits, part_kv = KVDecoder(embedded_hf.model, cache)._read(ids)
    assert cache.reused_tokens == 20
    torch.testing.assert_close(part_logits, whole_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(part_kv[-1][0], whole_kv[-1][0], atol=1e-4, rtol=1e-4)


def test_rows_that_end_early_leave_the_batch_without_changing_the_others(embedded_hf):
    long = Sampling(max_new_tokens=64)
    cache = embedded_hf.prefix_cache
    cache.clear()
    before = embedded_hf.stats.completion_tokens
    batched = embedded_hf.generate(CONVERSATIONS, long)
    used = embedded_hf.stats.completion_tokens - before
    assert used < 4 * 64  # some rows ended early (the batch shrank)
    cache.clear()
    assert batched == [embedded_hf.generate([c], long)[0] for c in CONVERSATIONS]


def test_name_and_flags(embedded_hf, embedded_dir):
    assert embedded_hf.name == f"hf:{embedded_dir}"
    assert embedded_hf.supports_json_schema is False


def test_bad_inputs_fail_clearly(embedded_hf, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        HFBackend(embedded_hf.model, embedded_hf.tokenizer, batch_size=0)
    with pytest.raises(BackendError, match="adapter_config.json"):
        HFBackend(embedded_hf.model, embedded_hf.tokenizer, adapter=tmp_path)
    with pytest.raises(BackendError, match="could not load a model"):
        HFBackend(tmp_path / "missing")
    with pytest.raises(ValueError, match="prefix_cache_gb"):
        HFBackend(embedded_hf.model, embedded_hf.tokenizer, prefix_cache_gb=-1)
    with pytest.raises(ValueError, match="engine='vllm'.*generate"):
        HFBackend(embedded_hf.model, embedded_hf.tokenizer, engine="vllm")


@pytest.mark.parametrize("engine", ["generate", "continuous"])
def test_library_engines_say_what_the_kv_decoder_says(embedded_hf, engine):
    """Greedy text is one function of the prompt, whichever loop decodes it (one prompt: no padding differences)."""
    other = HFBackend(embedded_hf.model, embedded_hf.tokenizer, engine=engine)
    assert embedded_hf.engine == "kv" and other.engine == engine
    for conversation in CONVERSATIONS[1:3]:
        assert other.generate([conversation], GREEDY) == embedded_hf.generate([conversation], GREEDY)
    with peak_rss_growth() as grown:
        batch = other.generate(CONVERSATIONS, GREEDY)  # and a batch comes back whole, in order
    assert len(batch) == len(CONVERSATIONS) and "Paris" in batch[0] and all(t.strip() for t in batch)
    # the paged cache is sized to the requests: unsized, it took 90% of the machine's free RAM (21 GB here)
    assert grown() < 2e9, f"{engine}: resident memory grew {grown() / 1e9:.1f} GB for four 20-token replies"


def test_the_paged_cache_holds_every_request_and_no_more():
    from cbtgym.backends.hf import _paged_cache_for

    sizing = _paged_cache_for([[1] * 300, [1] * 10, [1] * 200], max_new_tokens=56, page_size=256)
    assert sizing["num_blocks"] == 2 + 1 + 1  # 356, 66 and 256 tokens in pages of 256
    assert sizing["max_batch_tokens"] == 510  # every prompt in one prefill step
    assert _paged_cache_for([[1] * 3000, [1] * 5], 8)["max_batch_tokens"] == 3000  # the longest always fits


def test_gqa_attention_matches_sdpa_on_a_padded_batch_and_is_restored(embedded_hf):
    from cbtgym.backends.gqa_attention import NAME, applies, gqa_attention

    model, tok = embedded_hf.model, embedded_hf.tokenizer
    assert applies(model)  # SmolLM2: 9 query heads over 3 KV heads, on CPU
    enc = tok(embedded_hf.prompts(CONVERSATIONS), return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    assert not bool(enc["attention_mask"].all())  # padded: transformers' sdpa would repeat the KV heads
    with torch.inference_mode():
        reference = model(**enc).logits
        with gqa_attention(model):
            assert model.config._attn_implementation == NAME
            grouped = model(**enc).logits
    assert model.config._attn_implementation == "sdpa"
    mask = enc["attention_mask"].bool()
    torch.testing.assert_close(grouped[mask], reference[mask], rtol=1e-4, atol=1e-4)
    embedded_hf.generate(CONVERSATIONS[:2], GREEDY)
    assert model.config._attn_implementation == "sdpa"  # generation switches it back, training keeps sdpa
