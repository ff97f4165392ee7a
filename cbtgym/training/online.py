"""Multi-turn GRPO over whole CBT sessions: the rollout and the reward TRL's GRPOTrainer calls.

A dataset row is a session start (:class:`~cbtgym.envs.sessions.EpisodeSpec`: seed, optional profile and
attitude). TRL repeats each row ``num_generations`` times, so the G copies of a row are one group: the
rollout starts each distinct row once and forks it G times, so a group's sessions share their start exactly
(the opening and the patient's first reply, even an LLM patient's sampled one). Then every round makes one
policy call for all running sessions (TRL's own generation: transformers on CPU, vLLM when ``use_vllm``,
sampled at the GRPOConfig's temperature/top_p, ``max_completion_length`` tokens per turn) and one
:meth:`SessionBatch.step` (one patient call, one reward call), until every session has ended.

Each session is one sequence (:class:`~cbtgym.training.chat_tokens.ChatLayout`): the prompt is the chat up
to the first therapist turn; the completion holds every therapist turn as generated (``env_mask`` 1) and,
between them, the template tokens with the patient's reply (``env_mask`` 0, so they carry no loss). The
reward of a sample is its session's return, the sum of the env's step rewards (the last step scored with
``done=True``, so terminal judges count). A session where any step reports a failed judge
(:func:`~cbtgym.envs.reward.judge_failed`) has no return: its reward is ``None``, which TRL leaves out of its
group's mean and std and gives advantage 0 (``GRPOTrainer._generate_and_score_completions``); it is
counted, never scored 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..envs.reward import judge_failed
from ..envs.sessions import EpisodeSpec, SessionBatch
from .chat_tokens import ChatLayout


def session_rows(specs: Sequence[EpisodeSpec]) -> list[dict[str, Any]]:
    """Dataset rows, one per session start; the start travels in the prompt (TRL hands a rollout only prompts)."""
    return [{"prompt": [{"role": "user", "content": json.dumps(
        {"seed": s.seed, "profile_id": s.profile_id, "attitude": s.attitude})}]} for s in specs]


def row_spec(prompt: Any) -> EpisodeSpec:
    """The :class:`EpisodeSpec` a :func:`session_rows` prompt carries."""
    text = prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)
    data = json.loads(text)
    return EpisodeSpec(data["seed"], data.get("profile_id"), data.get("attitude"))


@dataclass
class SessionSample:
    """One played session of a rollout call: what the env recorded and what the trainer got."""

    spec: EpisodeSpec
    transcript: Any
    step_rewards: list[float]
    judge_failed: bool
    completion_ids: list[int]
    env_mask: list[int]

    @property
    def episode_return(self) -> float | None:
        """The sum of the step rewards; ``None`` when a judge failed on any step (no score, not 0)."""
        return None if self.judge_failed else float(sum(self.step_rewards))


class SessionRollout:
    """``rollout_func`` for TRL's GRPOTrainer: one whole session per sample.

    Args:
        system_prompt: The therapist's system prompt.
        env_kwargs: Arguments of CBTSession-v0 (profiles, patient, reward_fn, max_rounds...); the patient and
            the reward are built once.

    Attributes:
        calls: Rollout calls so far (one per generation batch).
        sessions: Sessions played so far.
        last: The :class:`SessionSample` of the last call, in prompt order.
    """

    def __init__(self, system_prompt: str, env_kwargs: dict[str, Any]) -> None:
        self.system_prompt = system_prompt
        self.batch = SessionBatch.from_kwargs(**env_kwargs)
        self.calls = 0
        self.sessions = 0
        self.last: list[SessionSample] = []

    def __call__(self, prompts: list, trainer) -> dict[str, Any]:
        specs = [row_spec(p) for p in prompts]
        starts = list(dict.fromkeys(specs))
        self.batch.reset(starts)
        forks = self.batch.fork([starts.index(s) for s in specs])  # one independent copy per sample, in order
        layout = ChatLayout(trainer.processing_class, trainer.eos_token_ids)
        prompt_ids = [layout.prompt_ids(s.transcript.as_chat("therapist", self.system_prompt)) for s in forks.sessions]
        seqs = [_Sequence() for _ in specs]
        rewards: list[list[float]] = [[] for _ in specs]
        failed = [False] * len(specs)
        # Several processes generate collectively (vLLM server, ZeRO-3 gathers): each then makes `max_rounds`
        # generation calls for all of its sessions, and the turns of sessions that have ended are dropped.
        aligned = trainer.accelerator.num_processes > 1
        rounds = 0
        while any(not s.done for s in forks.sessions) or (aligned and rounds < (self.batch.max_rounds or 0)):
            live = [i for i, s in enumerate(forks.sessions) if not s.done]
            asked = list(range(len(specs))) if aligned else live
            turn_ids, turn_logprobs = trainer._generate_single_turn(  # TRL's own: transformers or vLLM
                [prompt_ids[i] + seqs[i].ids for i in asked], None, {}, 1)
            rounds += 1
            turns = {i: (ids, None if turn_logprobs is None else turn_logprobs[k])
                     for k, (i, ids) in enumerate(zip(asked, turn_ids))}
            if not live:
                continue
            texts = trainer.processing_class.batch_decode([turns[i][0] for i in live], skip_special_tokens=True)
            actions: list[str | None] = [None] * len(specs)
            for i, text in zip(live, texts):
                actions[i] = text.strip() or "..."  # an empty turn is played as silence, as in collection
            results = forks.step(actions)
            for i in live:
                seqs[i].policy(*turns[i])
                rewards[i].append(float(results[i].reward.value))
                failed[i] = failed[i] or judge_failed(results[i].reward.components)
                session = forks.sessions[i]
                if not session.done:
                    seqs[i].env(layout.between_turns(session.transcript.as_chat("therapist", self.system_prompt),
                                                     layout.closes_turn(turns[i][0])))
        self.calls += 1
        self.sessions += len(specs)
        self.last = [SessionSample(spec, s.transcript.copy(), rewards[i], failed[i], seqs[i].ids, seqs[i].mask)
                     for i, (spec, s) in enumerate(zip(specs, forks.sessions))]
        sampled = all(q.logprobs is not None for q in seqs)  # vLLM's; transformers generation gives none
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [q.ids for q in seqs],
            "env_mask": [q.mask for q in seqs],
            "logprobs": [q.logprobs for q in seqs] if sampled else None,
            "episode_return": [q.episode_return for q in self.last],
        }


@dataclass
class _Sequence:
    """One session's completion as it grows: the policy's turns (mask 1) and the template and patient tokens
    between them (mask 0, log-prob 0 as TRL's tool loop writes them); ``logprobs`` None once a turn came without."""

    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = field(default_factory=list)

    def policy(self, ids: Sequence[int], logprobs: Sequence[float] | None) -> None:
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs = None if logprobs is None or self.logprobs is None else self.logprobs + list(logprobs)

    def env(self, ids: Sequence[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(ids)


class EpisodeReturn:
    """TRL reward function: the session's return from the rollout; ``None`` (no score) where a judge failed.

    Logs, per generation batch, ``judge_failures`` (samples without a score) and ``group_reward_std`` (the
    spread of the scored returns within each group, averaged over groups: what GRPO learns from; TRL's
    ``reward_std`` is the spread over the whole batch).

    Args:
        num_generations: The group size (TRL's ``num_generations``).

    Attributes:
        failures: Samples left without a score so far.
        scored: Samples scored so far.
        groups_hit: Groups with at least one unscored sample.
    """

    __name__ = "episode_return"

    def __init__(self, num_generations: int) -> None:
        self.num_generations = num_generations
        self.failures = self.scored = self.groups_hit = 0

    def __call__(self, prompts: Sequence, completions: Sequence, episode_return: Sequence[float | None],
                 log_metric=None, **_: Any) -> list[float | None]:
        returns = list(episode_return)
        g = self.num_generations
        groups = [returns[k:k + g] for k in range(0, len(returns), g)]
        failed = sum(r is None for r in returns)
        self.failures += failed
        self.scored += len(returns) - failed
        self.groups_hit += sum(None in grp for grp in groups)
        if log_metric is not None:
            log_metric("judge_failures", float(failed))
            spreads = [_std([r for r in grp if r is not None]) for grp in groups]
            spreads = [s for s in spreads if s is not None]
            if spreads:
                log_metric("group_reward_std", sum(spreads) / len(spreads))
        return returns

    def counts(self) -> dict[str, int]:
        """``{"samples": unscored samples, "groups": groups they were in, "scored": scored samples}``."""
        return {"samples": self.failures, "groups": self.groups_hit, "scored": self.scored}


def _std(values: list[float]) -> float | None:
    """The sample standard deviation (as TRL's ``nanstd``), None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
