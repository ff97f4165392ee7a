"""Evaluate a therapist on fixed episodes, resumably, and summarise with bootstrap CIs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..envs.sessions import SessionBatch
from ..profiles import load_profiles
from ..rollout import EpisodeSpec, Therapist, run_episodes
from .ranks import Shard, run_chunks
from .stats import paired_bootstrap, summarize


def eval_specs(profiles: str, attitudes: str = "both", seeds: Sequence[int] = (0,), limit: int = 0) -> list[EpisodeSpec]:
    """One episode per profile x attitude x seed: the same list for every policy compared.

    ``limit`` > 0 keeps the first ``limit`` profiles (smoke tests, quick looks).
    """
    chosen = {"both": ("active", "passive"), "profile": (None,)}.get(attitudes, (attitudes,))
    if attitudes not in ("both", "profile", "active", "passive"):
        raise ValueError(f"eval_attitudes must be 'both', 'profile', 'active' or 'passive' (got {attitudes!r})")
    loaded = load_profiles(profiles)
    loaded = loaded[:limit] if limit > 0 else loaded
    return [EpisodeSpec(seed, p.id, a) for p in loaded for a in chosen for seed in seeds]


def evaluate(therapist: Therapist, specs: Sequence[EpisodeSpec], out_path: str | Path, batch_size: int = 16,
             progress=None, shard: Shard | None = None, **env_kwargs: Any) -> list[dict[str, Any]]:
    """Run the episodes not yet in ``out_path`` (this process's share of them, see :mod:`.ranks`) and return
    all of them, in ``specs`` order."""
    envs: list[SessionBatch] = []  # built on the first chunk: its patient and reward serve every chunk

    def work(chunk: list[EpisodeSpec]) -> list[dict[str, Any]]:
        envs[:] = envs or [SessionBatch.from_kwargs(**env_kwargs)]
        return [ep.to_dict() for ep in run_episodes(therapist, chunk, batch_size=batch_size, batch=envs[0], **env_kwargs)]

    return run_chunks(out_path, {"therapist": therapist, "batch_size": batch_size, "env": env_kwargs}, specs,
                      key=lambda s: s.key, batch_size=batch_size, work=work, shard=shard, progress=progress)


def episode_components(ep: dict[str, Any]) -> dict[str, float]:
    """Per-episode mean of each numeric reward component over its steps."""
    acc: dict[str, list[float]] = defaultdict(list)
    for step in ep["components"]:
        for k, v in step.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                acc[k].append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def summarize_episodes(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    rewards = [ep["reward"] for ep in episodes]
    s = summarize(rewards)
    comps: dict[str, list[float]] = defaultdict(list)
    for ep in episodes:
        for k, v in episode_components(ep).items():
            comps[k].append(v)
    return {"mean_reward": s["mean"], "ci95": s["ci95"], "components": {k: float(np.mean(v)) for k, v in comps.items()}}


def compare(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``eval`` block of results.json: before, after and the paired delta."""
    assert [b["key"] for b in before] == [a["key"] for a in after], "before/after must be the same episodes"
    return {
        "before": summarize_episodes(before),
        "after": summarize_episodes(after),
        "delta": paired_bootstrap([b["reward"] for b in before], [a["reward"] for a in after]),
        "episodes": len(before),
    }


def evaluate_backend(backend, prompt: str, specs: Sequence[EpisodeSpec], out_path: str | Path, *, max_new_tokens: int,
                     batch_size: int = 16, desc: str = "eval", shard: Shard | None = None,
                     **env_kwargs: Any) -> list[dict[str, Any]]:
    """:func:`evaluate` with a greedy prompt-only therapist on ``backend`` and a progress bar."""
    from tqdm import tqdm

    from ..backends.base import Sampling
    from ..therapists import PromptTherapist

    therapist = PromptTherapist(backend, prompt, Sampling(max_new_tokens=max_new_tokens))
    with tqdm(total=len(specs), desc=desc, unit="ep", disable=shard is not None and not shard.is_main) as bar:
        return evaluate(therapist, specs, out_path, batch_size=batch_size, progress=bar.update, shard=shard, **env_kwargs)
