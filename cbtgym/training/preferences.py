"""Preference pairs from environment rollouts.

At every therapist turn of sessions run with the current policy, sample ``k``
candidate replies; score each candidate (the turn-level reward of the state plus
the candidate, after the patient has answered it, or the return of the episode the
current policy plays on from it); keep chosen/rejected pairs whose scores differ by
at least ``min_margin``: the best against the worst, or, with a greedy anchor, each
against the policy's own greedy reply.

A candidate whose reward reports a failed judge has no score (``None``): it is never
ranked, so no pair is formed with it, and :func:`count_failures` counts it.

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

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..backends.base import Backend, Sampling
from ..envs.reward import judge_failed
from ..envs.sessions import SessionBatch
from ..jsonl import read_jsonl
from ..profiles import load_profiles
from ..rollout import Act, EpisodeSpec, play_out
from .ranks import Shard, run_chunks

SCORINGS = ("turn", "patient", "episode")


@dataclass(frozen=True)
class CandidateScoring:
    """How candidates are scored.

    Attributes:
        mode: ``"turn"`` (judge the reply itself), ``"patient"`` (judge after the patient has
            answered it, so the reply's effect counts) or ``"episode"`` (the return of the session
            played on from the reply to its end by the current policy and the patient, terminal
            judges included, so credit reaches replies whose effect shows only later).
        rollouts: ``"episode"``: continuations per candidate. 1 plays on greedily; more sample the
            continuation with the candidate sampling and average their returns.
    """

    mode: str = "turn"
    rollouts: int = 1

    def __post_init__(self) -> None:
        if self.mode not in SCORINGS:
            raise ValueError(f"scoring mode must be one of {SCORINGS} (got {self.mode!r})")
        if isinstance(self.rollouts, bool) or not isinstance(self.rollouts, int) or self.rollouts < 1:
            raise ValueError(f"scoring rollouts must be an int >= 1 (got {self.rollouts!r})")
        if self.rollouts > 1 and self.mode != "episode":
            raise ValueError(f"scoring rollouts={self.rollouts} only applies to mode 'episode' (got {self.mode!r}); "
                             "use CandidateScoring('episode', rollouts) or leave rollouts at 1")

    def setting(self) -> str | dict[str, Any]:
        """What the resume sidecar records: the mode alone for turn and patient scoring (as files written
        before episode scoring existed record it, so they still resume), mode and rollouts for episode."""
        return self.mode if self.mode != "episode" else {"mode": self.mode, "rollouts": self.rollouts}


def collection_specs(profiles: str, episodes: int, risk_episodes: int = 0, seed: int = 0,
                     risk_opening: bool = False) -> list[EpisodeSpec]:
    """Sessions to collect candidates in: ``episodes`` with a profile drawn by seed, then
    ``risk_episodes`` pinned to the profiles with risk flags (cycling over them, active then passive),
    each opening with the patient's risk statement when ``risk_opening``.

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
        specs += [EpisodeSpec(seed * 100000 + episodes + i, *slots[i % len(slots)], crisis_opening=risk_opening)
                  for i in range(risk_episodes)]
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
    crisis_k: int | None = None,
    progress: Callable[[int], None] | None = None,
    shard: Shard | None = None,
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
    With ``crisis_k`` the first state of a session that opens in a crisis (``EpisodeSpec.crisis_opening``)
    gets that many candidates instead of ``k``: a small policy's own safe reply to a crisis is rare, and
    without one the state gives no pair.
    With ``scoring=CandidateScoring("episode", m)`` a candidate's score is its episode return: the
    policy plays each candidate's session on to its end under ``system_prompt`` (greedily, or ``m``
    continuations sampled with ``sampling`` and averaged), see :func:`_score_episodes`.
    A candidate whose reward reports a failed judge scores ``None`` (null in the file) and the state
    records how many did as ``"failed"`` (only when some did, so other records stay as they were).
    Returns the path of ``candidates.jsonl``. Episodes already in it are skipped. With ``shard`` this process
    plays its share of the chunks of ``batch_size`` sessions (:mod:`.ranks`); the file ends the same.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 to form pairs (got {k})")
    if crisis_k is not None and crisis_k < 2:
        raise ValueError(f"crisis_k must be >= 2 to form pairs (got {crisis_k}); leave it unset to use k")
    groups = opening_groups(explore_prefixes)
    if groups and k < len(groups) + 1 + int(greedy_anchor):
        raise ValueError(f"explore_prefixes needs k >= {len(groups) + 1 + int(greedy_anchor)} so that one candidate "
                         f"stays a free sample (got k={k})")
    out = Path(out_dir) / "candidates.jsonl"
    settings = {"policy": policy, "system_prompt": system_prompt, "k": k, "sampling": sampling,
                "scoring": scoring.setting(), "batch_size": batch_size, "greedy_anchor": greedy_anchor,
                "explore_prefixes": groups, "advance_best": advance_best, "env": env_kwargs}
    if crisis_k is not None:  # only when set, so files collected before it existed still resume
        settings["crisis_k"] = crisis_k
    envs: list[SessionBatch] = []  # built on the first chunk: a finished file needs no env

    def work(chunk: list[EpisodeSpec]) -> list[dict[str, Any]]:
        envs[:] = envs or [SessionBatch.from_kwargs(**env_kwargs)]
        batch = envs[0]
        sessions = batch.reset(chunk)
        records = [{"key": s.key, "seed": s.seed, "profile_id": sess.profile.id, "states": []}
                   for s, sess in zip(chunk, sessions)]
        turn = 0
        while not all(sess.done for sess in sessions):
            idx = [i for i, sess in enumerate(sessions) if not sess.done]
            convs = [sessions[i].transcript.as_chat("therapist", system_prompt) for i in idx]
            seed = chunk[0].seed * 1000 + turn
            openings = [[g[(turn + i) % len(g)] for g in groups] for i in idx] if groups else None
            ks = [crisis_k if crisis_k and turn == 0 and chunk[i].crisis_opening else k for i in idx]
            cands = _candidates(policy, convs, ks, sampling.with_(seed=seed), greedy_anchor, openings)
            if scoring.mode == "episode":
                act = _policy_act(policy, system_prompt, sampling.with_(seed=seed), scoring.rollouts == 1)
                scores = _score_episodes(batch, idx, cands, scoring.rollouts, act)
            else:
                scores = _score(batch, idx, cands, scoring)
            actions: list[str | None] = [None] * len(chunk)
            for j, i in enumerate(idx):
                state = {"turn": turn, "prompt": convs[j], "candidates": cands[j], "scores": scores[j]}
                if greedy_anchor:
                    state["greedy"] = 0
                if openings:
                    state["guided"] = {str(len(cands[j]) - len(groups) + m): o for m, o in enumerate(openings[j])}
                failed = scores[j].count(None)
                if failed:
                    state["failed"] = failed
                records[i]["states"].append(state)
                # Advance with the best candidate (states an improved policy reaches), the greedy reply
                # (the states a greedy evaluation visits) or a random one of the policy's own samples.
                # Only scored candidates can be best; with none scored the first (the greedy reply, when
                # anchored) goes on.
                if advance_best:
                    scored = [c for c in range(len(cands[j])) if scores[j][c] is not None] or [0]
                    actions[i] = cands[j][max(scored, key=lambda c: scores[j][c])]
                else:
                    free = len(cands[j]) - len(groups)
                    actions[i] = cands[j][0 if greedy_anchor else random.Random(seed + i).randrange(free)]
            batch.step(actions)
            turn += 1
        return records

    run_chunks(out, settings, specs, key=lambda s: s.key, batch_size=batch_size, work=work, shard=shard, progress=progress)
    return out


def _candidates(policy: Backend, convs: list, ks: list[int], sampling: Sampling, greedy_anchor: bool,
                openings: list[list[str]] | None = None) -> list[list[str]]:
    """``ks[j]`` replies for conversation j: [greedy] + samples [+ one sample continuing each of ``openings[j]``]."""
    g = len(openings[0]) if openings else 0
    ns = [k - int(greedy_anchor) - g for k in ks]
    batch = [c for c, n in zip(convs, ns) for _ in range(n)]
    if openings:
        # A prefill (the conversation ends with the opening as the assistant's partial reply).
        batch += [[*c, {"role": "assistant", "content": o}] for c, os in zip(convs, openings) for o in os]
    texts = policy.generate(batch, sampling)
    cands = [[t.strip() or "..." for t in part] for part in _per_state(texts[:sum(ns)], ns)]
    if openings:
        guided = texts[sum(ns):]
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


def _score(batch: SessionBatch, idx: list[int], cands: list[list[str]],
           scoring: CandidateScoring) -> list[list[float | None]]:
    """Score every candidate of every running session with ONE reward call (and one patient call).

    Each candidate goes, as the policy wrote it, into a copy of its session (``"patient"``: the
    patient answers it, its reply as generated), scored with ``done=False``. Not a core step
    (which cleans the text and ends the session on a closing): the scores pairs were made with.
    A candidate whose reward reports a failed judge scores ``None``.
    """
    copies = [batch.sessions[i].copy() for j, i in enumerate(idx) for _ in cands[j]]
    for session, c in zip(copies, (c for cs in cands for c in cs)):
        session.transcript.add("therapist", c)
    transcripts = [s.transcript for s in copies]
    if scoring.mode == "patient":
        for t, reply in zip(transcripts, batch.patient.respond([s.patient_state for s in copies], transcripts)):
            t.add("patient", reply.text, satisfaction=reply.satisfaction, meta=reply.meta)
    rewards = batch.reward_fn(transcripts, [s.profile for s in copies], [False] * len(transcripts))
    return _per_state([None if judge_failed(r.components) else float(r.value) for r in rewards], [len(c) for c in cands])


def _per_state(flat: list, counts: Sequence[int]) -> list[list]:
    """``flat`` (state-major) cut into one list per state, ``counts[j]`` items for state j."""
    starts = [sum(counts[:j]) for j in range(len(counts))]
    return [flat[a:a + n] for a, n in zip(starts, counts)]


def _policy_act(policy: Backend, system_prompt: str, sampling: Sampling, greedy: bool) -> Act:
    """The policy as :func:`~cbtgym.rollout.play_out`'s therapist: one ``generate`` call per step for all
    running sessions, greedy or sampled with ``sampling``.

    Sampled steps get seeds of their own (``seed * 1000 + 1 + step``): the state's seed itself is the
    candidates' draw, and ``seed + step`` would be a later turn's candidate draw.
    """
    steps = itertools.count()
    fixed = sampling.with_(temperature=0.0, top_p=1.0) if greedy else None

    def act(_: Sequence[int], transcripts: Sequence[Any]) -> list[str]:
        step = next(steps)
        s = fixed or (sampling if sampling.seed is None else sampling.with_(seed=sampling.seed * 1000 + 1 + step))
        texts = policy.generate([t.as_chat("therapist", system_prompt) for t in transcripts], s)
        return [t.strip() or "..." for t in texts]  # an empty reply is played as silence, as in collection

    return act


def _score_episodes(batch: SessionBatch, idx: list[int], cands: list[list[str]], rollouts: int,
                    act: Act) -> list[list[float | None]]:
    """Score every candidate by its episode return: all forks of the step advance together.

    Each running session is forked once per candidate and rollout; each fork takes its candidate
    as a core step (so a candidate that closes the session ends it, with ``done=True`` and the
    terminal judges), then :func:`~cbtgym.rollout.play_out` plays all forks to their ends with
    ``act``: one policy, one patient and one reward call per step for every fork of every session.
    A candidate's score is the sum of its fork's step rewards from the candidate on, averaged over
    its rollouts; ``None`` when any of those steps reports a failed judge (a return built from a
    failure is no score). The sessions of ``batch`` are not changed.
    """
    forks = batch.fork([i for i, cs in zip(idx, cands) for _ in cs], rollouts)  # order: session, candidate, rollout
    first = forks.step([c for cs in cands for c in cs for _ in range(rollouts)])
    rest, comps = play_out(forks, act)
    returns = [None if any(judge_failed(c) for c in [r.reward.components, *later]) else r.reward.value + sum(more)
               for r, more, later in zip(first, rest, comps)]
    runs = [returns[c * rollouts:(c + 1) * rollouts] for c in range(sum(len(cs) for cs in cands))]
    return _per_state([None if None in rs else float(sum(rs)) / rollouts for rs in runs], [len(cs) for cs in cands])


PAIRINGS = ("extremes", "greedy", "improve")


def pairs_from_candidates(path: str | Path, min_margin: float, pairing: str = "extremes") -> list[dict[str, Any]]:
    """Chosen/rejected pairs whose margin is at least ``min_margin``.

    ``pairing="extremes"``: the best against the worst candidate of each state.
    ``pairing="greedy"``: the best against the greedy reply when it beats it, and the greedy reply
    against the worst when it beats that (states collected with ``greedy_anchor``; up to two pairs
    a state). ``pairing="improve"``: only the first of those, the best against the greedy reply;
    no pair has the greedy reply as its chosen side, so an NLL term on the chosen replies (RPO)
    never trains the policy towards what it already says. Identical texts never form a pair.
    Only scored candidates are ranked (a failed judge's ``None`` is never a side): a state left with
    fewer than two, or with an unscored greedy reply under a greedy pairing, gives no pair
    (:func:`count_failures` counts them).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS} (got {pairing!r})")
    pairs = []
    for rec in read_jsonl(path):
        for st in rec["states"]:
            scores, cands = st["scores"], st["candidates"]
            if pairing != "extremes" and "greedy" not in st:
                raise ValueError(f"pairing={pairing!r} needs candidates collected with greedy_anchor=True ({path}: {rec['key']})")
            order = _ranked(st, pairing)
            if not order:
                continue
            lo, hi = order[0], order[-1]
            if pairing == "extremes":
                matches = [(hi, lo, "")]
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


def _ranked(state: dict[str, Any], pairing: str) -> list[int]:
    """The state's scored candidates, worst to best; empty when failed judges leave nothing to pair
    (fewer than two scored, or a greedy pairing's greedy reply unscored)."""
    scores = state["scores"]
    order = sorted((i for i, v in enumerate(scores) if v is not None), key=lambda i: scores[i])
    if len(order) < 2 or (pairing != "extremes" and scores[state.get("greedy", 0)] is None):
        return []
    return order


def count_failures(path: str | Path, pairing: str = "extremes") -> dict[str, int]:
    """How many candidates of ``candidates.jsonl`` have no score because a judge failed.

    Returns ``{"candidates": unscored candidates, "states": states with one or more of them,
    "states_unpaired": those of them that give no pair at all under ``pairing``}`` (the
    ``judge_failures`` of train/dpo.py's results.json).
    """
    counts = {"candidates": 0, "states": 0, "states_unpaired": 0}
    for rec in read_jsonl(path):
        for st in rec["states"]:
            failed = st["scores"].count(None)
            if failed:
                counts["candidates"] += failed
                counts["states"] += 1
                counts["states_unpaired"] += not _ranked(st, pairing)
    return counts


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
