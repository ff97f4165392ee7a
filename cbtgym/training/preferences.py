"""Preference pairs from environment rollouts.

At every therapist turn of sessions run with the current policy, sample ``k``
candidate replies; score each candidate (the turn-level reward of the state plus
the candidate, or after the patient has answered it); keep the best and the worst
as a chosen/rejected pair when their scores differ by at least ``min_margin``.

The raw scored candidates are appended per finished episode to
``candidates.jsonl``; a killed run restarts with the episodes not yet there, so no
pair is lost or duplicated.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backends.base import Backend, Sampling
from ..envs.vector import CBTSessionVectorEnv
from ..jsonl import JsonlWriter, done_keys, read_jsonl
from ..rollout import EpisodeSpec


@dataclass(frozen=True)
class CandidateScoring:
    """How candidates are scored: ``"turn"`` (judge the reply itself) or ``"patient"``
    (judge after the patient has answered it, so the reply's effect counts)."""

    mode: str = "turn"

    def __post_init__(self) -> None:
        if self.mode not in ("turn", "patient"):
            raise ValueError(f"scoring mode must be 'turn' or 'patient' (got {self.mode!r})")


def collect_candidates(
    policy: Backend,
    system_prompt: str,
    specs: Sequence[EpisodeSpec],
    out_dir: str | Path,
    *,
    k: int = 4,
    sampling: Sampling = Sampling(max_new_tokens=48, temperature=1.0, top_p=0.95),
    scoring: CandidateScoring = CandidateScoring(),
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    **env_kwargs: Any,
) -> Path:
    """Run sessions, sample and score ``k`` candidates per therapist turn, append them to ``candidates.jsonl``.

    Returns the path of ``candidates.jsonl``. Episodes already in it are skipped.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 to form pairs (got {k})")
    out = Path(out_dir) / "candidates.jsonl"
    finished = done_keys(out, "key")
    todo = [s for s in specs if s.key not in finished]
    if progress:
        progress(len(specs) - len(todo))
    with JsonlWriter(out) as writer:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            venv = CBTSessionVectorEnv(len(chunk), **env_kwargs)
            venv.reset(seed=[s.seed for s in chunk], options={"per_env": [s.options() for s in chunk]})
            records = [{"key": s.key, "seed": s.seed, "profile_id": venv.envs[i].profile.id, "states": []}
                       for i, s in enumerate(chunk)]
            turn = 0
            while not venv.done.all():
                idx = [i for i in range(len(chunk)) if not venv.done[i]]
                convs = [venv.envs[i].transcript.as_chat("therapist", system_prompt) for i in idx]
                seed = chunk[0].seed * 1000 + turn
                texts = policy.generate([c for c in convs for _ in range(k)], sampling.with_(seed=seed))
                cands = [[t.strip() or "..." for t in texts[j * k:(j + 1) * k]] for j in range(len(idx))]
                scores = _score(venv, idx, cands, scoring)
                actions = [""] * len(chunk)
                for j, i in enumerate(idx):
                    records[i]["states"].append({"turn": turn, "prompt": convs[j], "candidates": cands[j], "scores": scores[j]})
                    # Advance with a random candidate so states cover the policy's own distribution.
                    actions[i] = cands[j][random.Random(seed + i).randrange(k)]
                venv.step(actions)
                turn += 1
            for rec in records:
                writer.write(rec)
            if progress:
                progress(len(chunk))
    return out


def _score(venv: CBTSessionVectorEnv, idx: list[int], cands: list[list[str]], scoring: CandidateScoring) -> list[list[float]]:
    """Score every candidate of every running session with ONE reward call (and one patient call)."""
    profiles, transcripts, states = [], [], []
    for j, i in enumerate(idx):
        env = venv.envs[i]
        for c in cands[j]:
            t = env.transcript.copy()
            t.add("therapist", c)
            profiles.append(env.profile)
            transcripts.append(t)
            states.append(copy.deepcopy(env._state))
    if scoring.mode == "patient":
        for t, reply in zip(transcripts, venv.patient.respond(states, transcripts)):
            t.add("patient", reply.text, satisfaction=reply.satisfaction, meta=reply.meta)
    rewards = venv.reward_fn(profiles, transcripts, [False] * len(transcripts))
    flat = [float(r.value) for r in rewards]
    k = len(cands[0]) if cands else 0
    return [flat[j * k:(j + 1) * k] for j in range(len(idx))]


def pairs_from_candidates(path: str | Path, min_margin: float) -> list[dict[str, Any]]:
    """Chosen/rejected pairs (best vs worst candidate per state) whose margin is at least ``min_margin``."""
    pairs = []
    for rec in read_jsonl(path):
        for st in rec["states"]:
            order = sorted(range(len(st["scores"])), key=lambda i: st["scores"][i])
            lo, hi = order[0], order[-1]
            margin = st["scores"][hi] - st["scores"][lo]
            if margin < min_margin or st["candidates"][hi].strip() == st["candidates"][lo].strip():
                continue
            pairs.append({
                "id": f"{rec['key']}#{st['turn']}",
                "prompt": st["prompt"],
                "chosen": [{"role": "assistant", "content": st["candidates"][hi]}],
                "rejected": [{"role": "assistant", "content": st["candidates"][lo]}],
                "margin": margin,
                "score_chosen": st["scores"][hi],
                "score_rejected": st["scores"][lo],
            })
    return pairs


def trim_prompt(messages: Sequence[dict[str, str]], keep_last: int) -> list[dict[str, str]]:
    """The system message(s) and the last ``keep_last`` dialogue messages (0 keeps all).

    Training cost on CPU grows with every prompt token; the turns just before the reply carry
    most of what decides between a chosen and a rejected reply.
    """
    if keep_last <= 0:
        return list(messages)
    system = [m for m in messages if m["role"] == "system"]
    dialogue = [m for m in messages if m["role"] != "system"]
    return system + dialogue[-keep_last:]
