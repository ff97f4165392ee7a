"""Preference pairs from environment rollouts.

At every therapist turn of sessions run with the current policy, sample ``k``
candidate replies; score each candidate (the turn-level reward of the state plus
the candidate, or after the patient has answered it); keep chosen/rejected pairs
whose scores differ by at least ``min_margin``: the best against the worst, or,
with a greedy anchor, each against the policy's own greedy reply.

The greedy anchor exists because a small policy is evaluated greedily: pairs
between two random samples move probability mass the greedy reply may never
visit, while a pair against the greedy reply moves exactly that reply.

Guided exploration (``explore_prefixes``) replaces the last samples of each state
with replies the policy writes after given openings (e.g. "What"): one per group
of openings, rotating within a group. A policy that almost never asks a question samples almost no
questions, so the reward can never prefer one; a guided candidate is still the
policy's own continuation, and the pair only wins when the reward says it should.

The raw scored candidates are appended per finished episode to
``candidates.jsonl``; a killed run restarts with the episodes not yet there, so no
pair is lost or duplicated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backends.base import Backend, Sampling
from ..envs.sessions import SessionBatch
from ..jsonl import JsonlWriter, read_jsonl
from ..profiles import load_profiles
from ..resume import resume_keys
from ..rollout import EpisodeSpec


@dataclass(frozen=True)
class CandidateScoring:
    """How candidates are scored: ``"turn"`` (judge the reply itself) or ``"patient"``
    (judge after the patient has answered it, so the reply's effect counts)."""

    mode: str = "turn"

    def __post_init__(self) -> None:
        if self.mode not in ("turn", "patient"):
            raise ValueError(f"scoring mode must be 'turn' or 'patient' (got {self.mode!r})")


def collection_specs(profiles: str, episodes: int, risk_episodes: int = 0, seed: int = 0) -> list[EpisodeSpec]:
    """Sessions to collect candidates in: ``episodes`` with a profile drawn by seed, then
    ``risk_episodes`` pinned to the profiles with risk flags (cycling over them, active then passive).

    Crisis states are where a therapist most needs the right reply and where a policy that never
    unlocks disclosures gets no pair at all: in the bank's training split 6 of 54 profiles carry a
    risk flag, so drawn sessions alone give a few crisis states per run.
    """
    if episodes < 0 or risk_episodes < 0:
        raise ValueError(f"collect_episodes and risk_episodes must be >= 0 (got {episodes}, {risk_episodes})")
    specs = [EpisodeSpec(seed=seed * 100000 + i) for i in range(episodes)]
    if risk_episodes:
        risky = [p.id for p in load_profiles(profiles) if p.risk_flags]
        if not risky:
            raise ValueError(f"risk_episodes={risk_episodes} but no profile in {profiles!r} has risk_flags; "
                             "set risk_episodes: 0 or use profiles with risk flags")
        slots = [(pid, att) for att in ("active", "passive") for pid in risky]
        specs += [EpisodeSpec(seed * 100000 + episodes + i, *slots[i % len(slots)]) for i in range(risk_episodes)]
    return specs


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
    greedy_anchor: bool = False,
    explore_prefixes: Sequence[str | Sequence[str]] = (),
    advance_best: bool = False,
    progress: Callable[[int], None] | None = None,
    **env_kwargs: Any,
) -> Path:
    """Run sessions, sample and score ``k`` candidates per therapist turn, append them to ``candidates.jsonl``.

    With ``greedy_anchor`` the first candidate of every state is the policy's greedy reply
    (recorded as ``"greedy": 0``) and the session advances with it, so the states are the
    ones a greedy evaluation visits; otherwise it advances with a random candidate.
    With ``explore_prefixes`` the last candidates of every state are guided: the policy continues
    an opening. A flat list of strings is one group; a list whose items are strings or lists gives
    one guided candidate per item (a string: always that opening; a list: rotating over turns and
    sessions). The state records ``"guided": {index: opening}``.
    With ``advance_best`` sessions go on with the best-scoring candidate: later states are the ones
    an improved policy reaches (disclosed thoughts, risk statements), which the base policy's own
    replies never unlock.
    Returns the path of ``candidates.jsonl``. Episodes already in it are skipped.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 to form pairs (got {k})")
    groups = opening_groups(explore_prefixes)
    if groups and k < len(groups) + 1 + int(greedy_anchor):
        raise ValueError(f"explore_prefixes needs k >= {len(groups) + 1 + int(greedy_anchor)} so that one candidate "
                         f"stays a free sample (got k={k})")
    out = Path(out_dir) / "candidates.jsonl"
    finished = resume_keys(out, {"policy": policy, "system_prompt": system_prompt, "k": k, "sampling": sampling,
                                 "scoring": scoring.mode, "batch_size": batch_size, "greedy_anchor": greedy_anchor,
                                 "explore_prefixes": groups, "advance_best": advance_best, "env": env_kwargs})
    todo = [s for s in specs if s.key not in finished]
    if progress:
        progress(len(specs) - len(todo))
    batch = SessionBatch.from_kwargs(**env_kwargs) if todo else None
    with JsonlWriter(out) as writer:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            sessions = batch.reset(chunk)
            records = [{"key": s.key, "seed": s.seed, "profile_id": sess.profile.id, "states": []}
                       for s, sess in zip(chunk, sessions)]
            turn = 0
            while not all(sess.done for sess in sessions):
                idx = [i for i, sess in enumerate(sessions) if not sess.done]
                convs = [sessions[i].transcript.as_chat("therapist", system_prompt) for i in idx]
                seed = chunk[0].seed * 1000 + turn
                openings = [[g[(turn + i) % len(g)] for g in groups] for i in idx] if groups else None
                cands = _candidates(policy, convs, k, sampling.with_(seed=seed), greedy_anchor, openings)
                scores = _score(batch, idx, cands, scoring)
                actions: list[str | None] = [None] * len(chunk)
                for j, i in enumerate(idx):
                    state = {"turn": turn, "prompt": convs[j], "candidates": cands[j], "scores": scores[j]}
                    if greedy_anchor:
                        state["greedy"] = 0
                    if openings:
                        state["guided"] = {str(k - len(groups) + m): o for m, o in enumerate(openings[j])}
                    records[i]["states"].append(state)
                    # Advance with the best candidate (states an improved policy reaches), the greedy reply
                    # (the states a greedy evaluation visits) or a random one of the policy's own samples.
                    if advance_best:
                        actions[i] = cands[j][max(range(k), key=lambda c: scores[j][c])]
                    else:
                        free = k - len(groups)
                        actions[i] = cands[j][0 if greedy_anchor else random.Random(seed + i).randrange(free)]
                batch.step(actions)
                turn += 1
            for rec in records:
                writer.write(rec)
            if progress:
                progress(len(chunk))
    return out


def _candidates(policy: Backend, convs: list, k: int, sampling: Sampling, greedy_anchor: bool,
                openings: list[list[str]] | None = None) -> list[list[str]]:
    """``k`` replies per conversation: [greedy] + samples [+ one sample continuing each of ``openings[j]``]."""
    g = len(openings[0]) if openings else 0
    n = k - int(greedy_anchor) - g
    batch = [c for c in convs for _ in range(n)]
    if openings:
        # A prefill (the conversation ends with the opening as the assistant's partial reply).
        batch += [[*c, {"role": "assistant", "content": o}] for c, os in zip(convs, openings) for o in os]
    texts = policy.generate(batch, sampling)
    cands = [[t.strip() or "..." for t in texts[j * n:(j + 1) * n]] for j in range(len(convs))]
    if openings:
        guided = texts[len(convs) * n:]
        # Byte-level tokenizers decode the continuation with its leading space: no glue needed.
        cands = [c + [(o + t).strip() for o, t in zip(os, guided[j * g:(j + 1) * g])]
                 for j, (c, os) in enumerate(zip(cands, openings))]
    if greedy_anchor:
        greedy = policy.generate(convs, sampling.with_(temperature=0.0, top_p=1.0))
        cands = [[g.strip() or "..."] + c for g, c in zip(greedy, cands)]
    return cands


def opening_groups(explore_prefixes: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Normalise ``explore_prefixes`` to groups of openings (see :func:`collect_candidates`)."""
    items = list(explore_prefixes)
    if items and all(isinstance(x, str) for x in items):
        groups = [items]
    else:
        groups = [[x] if isinstance(x, str) else list(x) for x in items]
    if any(not g or not all(isinstance(o, str) and o.strip() for o in g) for g in groups):
        raise ValueError(f"explore_prefixes must hold non-empty openings such as 'What' or lists of them (got {items!r})")
    return groups


def _score(batch: SessionBatch, idx: list[int], cands: list[list[str]], scoring: CandidateScoring) -> list[list[float]]:
    """Score every candidate of every running session with ONE reward call (and one patient call).

    Each candidate goes, as the policy wrote it, into a copy of its session (``"patient"``: the
    patient answers it, its reply as generated), scored with ``done=False``. Not a core step
    (which cleans the text and ends the session on a closing): the scores pairs were made with.
    """
    copies = [batch.sessions[i].copy() for j, i in enumerate(idx) for _ in cands[j]]
    for session, c in zip(copies, (c for cs in cands for c in cs)):
        session.transcript.add("therapist", c)
    transcripts = [s.transcript for s in copies]
    if scoring.mode == "patient":
        for t, reply in zip(transcripts, batch.patient.respond([s.patient_state for s in copies], transcripts)):
            t.add("patient", reply.text, satisfaction=reply.satisfaction, meta=reply.meta)
    rewards = batch.reward_fn(transcripts, [s.profile for s in copies], [False] * len(transcripts))
    flat = [float(r.value) for r in rewards]
    k = len(cands[0]) if cands else 0
    return [flat[j * k:(j + 1) * k] for j in range(len(idx))]


PAIRINGS = ("extremes", "greedy", "improve")


def pairs_from_candidates(path: str | Path, min_margin: float, pairing: str = "extremes") -> list[dict[str, Any]]:
    """Chosen/rejected pairs whose margin is at least ``min_margin``.

    ``pairing="extremes"``: the best against the worst candidate of each state.
    ``pairing="greedy"``: the best against the greedy reply when it beats it, and the greedy reply
    against the worst when it beats that (states collected with ``greedy_anchor``; up to two pairs
    a state). ``pairing="improve"``: only the first of those, the best against the greedy reply;
    no pair has the greedy reply as its chosen side, so an NLL term on the chosen replies (RPO)
    never trains the policy towards what it already says. Identical texts never form a pair.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS} (got {pairing!r})")
    pairs = []
    for rec in read_jsonl(path):
        for st in rec["states"]:
            scores, cands = st["scores"], st["candidates"]
            order = sorted(range(len(scores)), key=lambda i: scores[i])
            lo, hi = order[0], order[-1]
            if pairing == "extremes":
                matches = [(hi, lo, "")]
            elif "greedy" not in st:
                raise ValueError(f"pairing={pairing!r} needs candidates collected with greedy_anchor=True ({path}: {rec['key']})")
            else:
                g = st["greedy"]
                matches = [(hi, g, "+"), (g, lo, "-")] if pairing == "greedy" else [(hi, g, "+")]
            for win, lose, tag in matches:
                margin = scores[win] - scores[lose]
                if margin < min_margin or cands[win].strip() == cands[lose].strip():
                    continue
                pairs.append({
                    "id": f"{rec['key']}#{st['turn']}{tag}",
                    "prompt": st["prompt"],
                    "chosen": [{"role": "assistant", "content": cands[win]}],
                    "rejected": [{"role": "assistant", "content": cands[lose]}],
                    "margin": margin,
                    "score_chosen": scores[win],
                    "score_rejected": scores[lose],
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
