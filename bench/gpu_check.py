"""The GPU path in one command: decode throughput against the memory-bandwidth limit, a LoRA DPO step, a GRPO
step (and QLoRA when bitsandbytes is installed), on a randomly initialised model of Llama-3.1-8B's shape.

    python bench/gpu_check.py                      # one GPU, Llama-3.1-8B shape, bf16 (< 8 min on an H100/H200)
    python bench/gpu_check.py --shape tiny         # the same code path on CPU in about a minute (the test runs this)
    python bench/gpu_check.py --out gpu_check.json # also write the numbers as JSON

Nothing is downloaded: the weights are random (``LlamaForCausalLM(config)``, Llama-3.1-8B's published shape:
32 layers, hidden 4096, 32 query / 8 key-value heads, MLP 14336, vocabulary 128256) and the tokenizer is
the embedded SmolLM2's (its ids are valid in the larger vocabulary), so throughput and memory are those
of the real model and the text is noise. What it measures:

1. The hf backend's decode tokens/s at batch 1, 16 and 64 (the bank's opening states, ``--new_tokens`` new
   tokens each), beside the bandwidth limit: every decode step reads all weights once, so a step takes at
   least ``weight bytes / bandwidth`` and ``batch / that`` tokens/s is the ceiling (key/value reads ignored).
   The bandwidth is measured here (a device-to-device copy of ``--copy_gb``; ``--bandwidth_gbs`` overrides).
2. One LoRA DPO optimizer step with TRL's DPOTrainer (bf16 on GPU; pairs from the bank's opening states):
   wall time and peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS).
3. One GRPO step with TRL's GRPOTrainer and cbtgym's multi-turn SessionRollout (the rule patient, the
   embedded rubric as the reward): wall time and peak memory.
4. QLoRA (4-bit NF4 base, the same DPO step) when ``bitsandbytes`` is importable and a GPU is present.

The table it prints goes in the README's scale-out section.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import states  # noqa: E402  (a sibling bench script: the bank's opening states)

#: Llama-3.1-8B's shape (its config.json), and a tiny one with the same structure for CPU checks.
SHAPES = {
    "llama31-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=49152, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                 tie_word_embeddings=False),
}


def random_model(shape: str, device: str, dtype):
    """A randomly initialised LlamaForCausalLM of ``shape`` on ``device`` and the embedded tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cbtgym.backends.embedded import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    config = LlamaConfig(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def measure_bandwidth(device: str, gigabytes: float) -> float:
    """Bytes/s of a device-to-device copy (it reads and writes each byte: counted twice)."""
    import torch

    n = int(gigabytes * 2**30)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    t, reps = time.perf_counter(), 5
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    seconds = (time.perf_counter() - t) / reps
    del src, dst
    return 2 * n / seconds


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory of a block: GPU allocator peak on CUDA, else this process's peak RSS so far."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.gb = 0.0

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        from cbtgym.training.runs import peak_rss_gb

        self.gb = torch.cuda.max_memory_allocated() / 2**30 if self.device.startswith("cuda") else peak_rss_gb()


def decode_rows(model, tokenizer, batches: list[int], new_tokens: int, bandwidth: float) -> list[dict]:
    """Tokens/s of the hf backend per batch size, and the bandwidth ceiling at that batch."""
    from cbtgym.backends import HFBackend, Sampling

    backend = HFBackend(model, tokenizer, batch_size=max(batches))
    convs = states(max(batches))
    backend.generate(convs[:1], Sampling(max_new_tokens=2))  # warm-up: kernels, allocator
    step_floor = weight_bytes(model) / bandwidth
    rows = []
    for b in batches:
        before = backend.stats.completion_tokens
        _sync(backend.device)
        t = time.perf_counter()
        backend.generate(convs[:b], Sampling(max_new_tokens=new_tokens, temperature=1.0, seed=0))
        _sync(backend.device)
        seconds = time.perf_counter() - t
        tokens = backend.stats.completion_tokens - before
        ceiling = b / step_floor
        rows.append({"batch": b, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                     "ceiling_tokens_per_s": ceiling, "share_of_ceiling": tokens / seconds / ceiling})
    return rows


def dpo_step(model, tokenizer, device: str, pairs: int, max_length: int) -> dict:
    """One optimizer step of LoRA DPO (TRL), its wall time and peak memory."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from cbtgym.training.policy import lora_config

    rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": "What went through your mind when that happened?"}],
             "rejected": [{"role": "assistant", "content": "You should try to relax and think positive."}]}
            for p in states(pairs)]
    with tempfile.TemporaryDirectory() as d, PeakMemory(device) as mem:
        args = DPOConfig(output_dir=d, per_device_train_batch_size=pairs, max_steps=1, max_length=max_length,
                         bf16=device.startswith("cuda"), report_to=[], save_strategy="no", logging_steps=1,
                         use_cpu=not device.startswith("cuda"))
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=lora_config(model, r=16, alpha=32))
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
    loss = next((h["loss"] for h in trainer.state.log_history if "loss" in h), None)
    _unwrap(trainer)
    return {"pairs": pairs, "seconds": seconds, "peak_gb": mem.gb, "loss": loss}


def grpo_step(model, tokenizer, device: str, generations: int, new_tokens: int) -> dict:
    """One GRPO step (TRL) over cbtgym's multi-turn sessions (rule patient, embedded rubric)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.online import EpisodeReturn, SessionRollout, session_rows
    from cbtgym.training.policy import lora_config
    from cbtgym.training.preferences import collection_specs

    specs = collection_specs("bank:train", 1, seed=0)
    rollout = SessionRollout(therapist_prompt("llm4cbt"), dict(profiles="bank:train", max_rounds=2, reward_fn="rubric"))
    with tempfile.TemporaryDirectory() as d, PeakMemory(device) as mem:
        args = GRPOConfig(output_dir=d, per_device_train_batch_size=generations, num_generations=generations, max_steps=1,
                          max_completion_length=new_tokens, beta=0.0, bf16=device.startswith("cuda"), report_to=[],
                          save_strategy="no", logging_steps=1, use_cpu=not device.startswith("cuda"))
        trainer = GRPOTrainer(model=model, reward_funcs=[EpisodeReturn(generations)], args=args,
                              train_dataset=Dataset.from_list(session_rows(specs)), processing_class=tokenizer,
                              peft_config=lora_config(model, r=16, alpha=32), rollout_func=rollout)
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
    reward = next((h["reward"] for h in trainer.state.log_history if "reward" in h), None)
    _unwrap(trainer)
    return {"sessions": generations, "seconds": seconds, "peak_gb": mem.gb, "reward": reward}


def _unwrap(trainer) -> None:
    """Take the LoRA off the shared base model so the next step starts from the bare weights."""
    model = trainer.model
    if hasattr(model, "unload"):
        model.unload()
    del trainer
    gc.collect()


def qlora_step(shape: str, tokenizer, pairs: int, max_length: int) -> dict:
    """The DPO step on a 4-bit NF4 copy of a random model (saved to a temporary folder, loaded with bitsandbytes)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model, _ = random_model(shape, "cpu", torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        del model
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        q = AutoModelForCausalLM.from_pretrained(d, quantization_config=quant, device_map={"": 0})
    return dpo_step(q, tokenizer, "cuda", pairs, max_length)


def table(result: dict) -> str:
    """The markdown table for the README."""
    lines = [f"device: {result['device']}; shape {result['shape']} ({result['parameters'] / 1e9:.2f} B parameters, "
             f"{result['weight_gb']:.2f} GB weights); copy bandwidth {result['bandwidth_gbs']:.0f} GB/s", "",
             "| measurement | value | limit / note |", "| --- | --- | --- |"]
    for r in result["decode"]:
        lines.append(f"| hf decode, batch {r['batch']} | {r['tokens_per_s']:.1f} tokens/s | ceiling {r['ceiling_tokens_per_s']:.0f} "
                     f"tokens/s ({100 * r['share_of_ceiling']:.0f}% of it) |")
    for name in ("dpo", "grpo", "qlora_dpo"):
        r = result.get(name)
        if isinstance(r, dict):
            lines.append(f"| {name.replace('_', ' ')} step | {r['seconds']:.1f} s | peak memory {r['peak_gb']:.1f} GB |")
        elif r:
            lines.append(f"| {name.replace('_', ' ')} step | not run | {r} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama31-8b", help="model shape (default: Llama-3.1-8B)")
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    parser.add_argument("--batches", default="1,16,64", help="decode batch sizes, comma-separated")
    parser.add_argument("--new_tokens", type=int, default=64, help="tokens decoded per conversation")
    parser.add_argument("--copy_gb", type=float, default=4.0, help="size of the bandwidth copy")
    parser.add_argument("--bandwidth_gbs", type=float, default=0.0, help="memory bandwidth in GB/s (0: measure it)")
    parser.add_argument("--pairs", type=int, default=4, help="DPO pairs in the step")
    parser.add_argument("--max_length", type=int, default=1024, help="DPO max_length (tokens)")
    parser.add_argument("--generations", type=int, default=4, help="GRPO sessions in the step (one group)")
    parser.add_argument("--out", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is visible; use --device cpu --shape tiny")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches {args.batches!r}: give comma-separated integers, e.g. 1,16,64")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    model, tokenizer = random_model(args.shape, device, dtype)
    bandwidth = args.bandwidth_gbs * 1e9 or measure_bandwidth(device, args.copy_gb)
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "shape": args.shape,
              "parameters": sum(p.numel() for p in model.parameters()), "weight_gb": weight_bytes(model) / 1e9,
              "bandwidth_gbs": bandwidth / 1e9}
    print(f"[gpu_check] {result['device']}: {args.shape}, {result['parameters'] / 1e9:.2f} B parameters; "
          f"bandwidth {result['bandwidth_gbs']:.0f} GB/s", flush=True)
    result["decode"] = decode_rows(model, tokenizer, batches, args.new_tokens, bandwidth)
    print("[gpu_check] decode done", flush=True)
    result["dpo"] = dpo_step(model, tokenizer, device, args.pairs, args.max_length)
    print("[gpu_check] DPO step done", flush=True)
    result["grpo"] = grpo_step(model, tokenizer, device, args.generations, args.new_tokens)
    print("[gpu_check] GRPO step done", flush=True)
    del model
    gc.collect()
    try:
        import bitsandbytes  # noqa: F401
        have_bnb = True
    except ImportError:
        have_bnb = False
    if not device.startswith("cuda"):
        result["qlora_dpo"] = "needs a GPU"
    elif not have_bnb:
        result["qlora_dpo"] = "bitsandbytes not installed (pip install 'cbtgym[gpu]')"
    else:
        torch.cuda.empty_cache()
        result["qlora_dpo"] = qlora_step(args.shape, tokenizer, args.pairs, args.max_length)
    result["total_s"] = time.perf_counter() - t0
    print(table(result))
    print(f"total {result['total_s']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
