"""Judge throughput: transcripts scored per second, batched vs one by one, and the judge cache's speedup.

    OMP_NUM_THREADS=1 python bench/judge_throughput.py                  # defaults: about 2 min on 2 cores
    python bench/judge_throughput.py --n 32 --n-llm 8 --llm-tokens 64  # bigger
    python bench/judge_throughput.py --no-llm                           # embedded judges only

Transcripts come from real sessions: CBTSession-v0 with the rule patient and a scripted therapist
(fixed CBT questions, one list per session so sessions differ), run through ``cbtgym.rollout``.
Judges, each timed on the same transcripts:

* ``rubric``: the embedded rubric (``RubricReward.score``: act classifier, MiniLM AT, safety rules);
* ``at_embedding``: :class:`~rewards.at_recovery.EmbeddingATJudge` (MiniLM);
* ``ctrs_llm``: :class:`~rewards.ctrs.CTRSJudge` on the embedded SmolLM2-135M-Instruct (HF
  backend), one attempt, ``--llm-tokens`` new tokens (too few for a full rating, so most replies
  fail to parse; the bench measures cost, not quality).

"batched" scores all N transcripts in one ``score`` call (one backend/embedding call per judge
step); "one by one" makes N calls of one transcript. Each arm gets a fresh judge (the rubric
memoises embeddings by text) warmed up on an unrelated transcript, so model loading is not
timed. The cache row re-scores the LLM judge's transcripts with a :class:`~cbtgym.llm.cache.JudgeCache`
in a temporary file: the batched pass (cold) fills it, the warm pass must make no backend call.
The CTRS prompt is long (~1,800 tokens with all 11 items for a 4-round session), so on a CPU the
LLM judge is bound by prefill compute and batching gains little there; ``--ctrs-items`` shortens it.
All ratios come from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence


from cbtgym.backends.base import Sampling
from cbtgym.profiles import load_profiles
from cbtgym.rollout import EpisodeSpec, run_episodes
from cbtgym.transcript import Transcript

QUESTIONS = [
    "That sounds hard. How have you been feeling about it?",
    "What happened the last time it came up?",
    "What went through your mind in that moment?",
    "If that thought were true, what would it mean about you?",
    "How much do you believe that thought right now?",
    "What would you say to a friend who had that thought?",
    "Let's try something small this week: notice when the thought comes and write it down.",
]


class ScriptedTherapist:
    """Asks ``QUESTIONS`` in an order that depends on the session (so transcripts differ), batched."""

    def act(self, transcripts: Sequence[Transcript]) -> list[str]:
        out = []
        for t in transcripts:
            shift = sum(map(ord, t.profile_id)) % len(QUESTIONS)
            out.append(QUESTIONS[(shift + len(t.therapist_turns) - 1) % len(QUESTIONS)])
        return out


def collect_sessions(n: int, profiles: str, rounds: int) -> tuple[list[Transcript], list[Any]]:
    """``n`` finished sessions of the rule patient and their profiles."""
    by_id = {p.id: p for p in load_profiles(profiles)}
    specs = [EpisodeSpec(seed=i) for i in range(n)]
    episodes = list(run_episodes(ScriptedTherapist(), specs, batch_size=n, profiles=profiles, patient="rule",
                                 reward_fn="placeholder", max_rounds=rounds))
    transcripts = [e.transcript for e in episodes]
    return transcripts, [by_id[t.profile_id] for t in transcripts]


def warmup_transcript() -> Transcript:
    t = Transcript("warmup", "active")
    for speaker, text in [("therapist", "Hello there, what brings you here?"), ("patient", "Work has been a lot lately."),
                          ("therapist", "What was that like for you?"), ("patient", "Tiring, honestly.")]:
        t.add(speaker, text)
    return t


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def compare(name: str, make_judge: Callable[[], Any], transcripts, profiles, warm: Callable[[Any], None],
            after_batched: Callable[[Any, list], None] | None = None) -> dict[str, float]:
    """Batched vs one-by-one scoring with fresh, warmed-up judges; prints one row.

    ``after_batched(judge, results)`` runs after the timed batched pass (the cache row uses it).
    """
    n = len(transcripts)
    arms = {}
    for arm in ("one_by_one", "batched"):
        judge = make_judge() if arm == "one_by_one" else make_judge(batched=True)
        warm(judge)
        if arm == "batched":
            secs, results = timed(lambda j=judge: j.score(transcripts, profiles))
        else:
            secs, results = timed(lambda j=judge: [r for t, p in zip(transcripts, profiles) for r in j.score([t], [p])])
        arms[arm] = {"seconds": secs, "per_s": n / secs, "failed": sum(r.total is None for r in results)}
    b, s = arms["batched"], arms["one_by_one"]
    print(f"{name:<14} N={n:>3}  batched {b['per_s']:8.3f}/s ({b['seconds']:6.2f} s)   one by one {s['per_s']:8.3f}/s "
          f"({s['seconds']:6.2f} s)   batched/one-by-one {b['per_s'] / s['per_s']:5.2f}x   unscored {b['failed']}/{n}")
    if after_batched is not None:
        after_batched(judge, results, b["seconds"])
    return {"batched_per_s": b["per_s"], "one_by_one_per_s": s["per_s"], "ratio": b["per_s"] / s["per_s"]}


def warm_on_unrelated(profile: Any) -> Callable[[Any], None]:
    """Warm a fresh judge (model load, per-instance example embeddings) on a transcript not in the set."""
    return lambda judge: judge.score([warmup_transcript()], [profile])


def cache_row(transcripts, profiles) -> Callable[[Any, list, float], None]:
    """After the batched (cold, cache-filling) pass: re-score the same transcripts from the cache."""

    def row(judge, first, cold: float) -> None:
        calls = judge.backend.stats.calls
        warm, second = timed(lambda: judge.score(transcripts, profiles))
        same = [a.raw for a in first] == [b.raw for b in second]
        n = len(transcripts)
        print(f"{'  + cache':<14} N={n:>3}  cold {n / cold:8.3f}/s ({cold:6.2f} s, the batched pass above)   "
              f"warm {n / warm:8.1f}/s ({warm * 1000:6.1f} ms, {judge.backend.stats.calls - calls} backend calls)   "
              f"cache speedup {cold / warm:,.0f}x   same replies: {same}   entries {len(judge.cache)}")

    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="sessions for the embedded judges")
    parser.add_argument("--n-llm", type=int, default=2, help="sessions for the LLM CTRS judge (the first n)")
    parser.add_argument("--rounds", type=int, default=4, help="therapist turns per session (after the opening)")
    parser.add_argument("--llm-tokens", type=int, default=32, help="max_new_tokens of the CTRS judge")
    parser.add_argument("--ctrs-items", default="all", help="comma-separated CTRS item keys (shorter prompt), or 'all'")
    parser.add_argument("--profiles", default="bank:test", help="profile source")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS)")
    parser.add_argument("--no-llm", action="store_true", help="skip the CTRS judge and the cache row")
    args = parser.parse_args()
    if args.n_llm > args.n:
        parser.error("--n-llm must not exceed --n")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from rewards.at_recovery import EmbeddingATJudge
    from rewards.rubric import RubricReward

    t0 = time.perf_counter()
    transcripts, profiles = collect_sessions(args.n, args.profiles, args.rounds)
    turns = sum(len(t.turns) for t in transcripts) / len(transcripts)
    print(f"{len(transcripts)} sessions of the rule patient ({turns:.1f} turns on average) in "
          f"{time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    warm = warm_on_unrelated(profiles[0])

    compare("rubric", lambda batched=False: RubricReward(), transcripts, profiles, warm)
    compare("at_embedding", lambda batched=False: EmbeddingATJudge(), transcripts, profiles, warm)
    if args.no_llm:
        print(f"total {time.perf_counter() - t0:.1f} s")
        return

    from cbtgym.backends.embedded import embedded_model_dir
    from cbtgym.backends.hf import HFBackend
    from cbtgym.llm import JudgeCache
    from rewards.ctrs import CTRSJudge

    secs, backend = timed(lambda: HFBackend(embedded_model_dir()))
    backend.generate([[{"role": "user", "content": "Hello"}]], Sampling(max_new_tokens=4))  # first-call warm-up
    print(f"SmolLM2-135M-Instruct (hf) loaded in {secs:.1f} s (not counted)")
    sampling = Sampling(max_new_tokens=args.llm_tokens)
    items = None if args.ctrs_items == "all" else [k.strip() for k in args.ctrs_items.split(",") if k.strip()]

    with tempfile.TemporaryDirectory(prefix="judge-cache-") as tmp:
        def ctrs(batched: bool = False) -> CTRSJudge:
            # the batched judge also fills a fresh cache, which the cache row then reads back
            cache = JudgeCache(Path(tmp) / "cache.sqlite") if batched else None
            return CTRSJudge(backend, sampling=sampling, max_attempts=1, cache=cache, items=items)

        llm_t, llm_p = transcripts[: args.n_llm], profiles[: args.n_llm]
        compare("ctrs_llm", ctrs, llm_t, llm_p, lambda judge: None, cache_row(llm_t, llm_p))
    print(f"total {time.perf_counter() - t0:.1f} s")
    backend.close()


if __name__ == "__main__":
    main()
