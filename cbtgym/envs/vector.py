"""N CBT sessions stepped together, with one patient call and one reward call per step."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .cbt_session import CBTSessionEnv, make_patient, make_reward


class CBTSessionVectorEnv(VectorEnv):
    """``num_envs`` sessions that share one patient and one reward function.

    Each :meth:`step` makes ONE batched patient call (one ``backend.generate`` for all
    sessions still running, plus one for satisfaction ratings when the LLM patient rates)
    and ONE reward call. With a deterministic backend the transcripts are the same as
    those of ``num_envs`` sequential :class:`CBTSessionEnv` reset with the same seeds.

    Autoreset is disabled: a finished session stays finished (its action is ignored and
    its reward is 0) until :meth:`reset`. ``reset(options=...)`` takes the single env's
    options for all sessions, plus ``"reset_mask"`` (which sessions to reset) and
    ``"per_env"`` (a list of per-session option dicts).
    Observations are tuples of strings; ``infos`` follow Gymnasium's vector convention
    (``info[key]`` an object array, ``info["_" + key]`` its mask); ``env_infos`` keeps the last
    reset/step's per-session info dicts as the single env returns them, for code that wants them unvectorized.

    Args:
        num_envs: Number of parallel sessions.
        **kwargs: As for :class:`CBTSessionEnv`.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": ["ansi"]}

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        patient = make_patient(
            kwargs.pop("patient", None), kwargs.pop("patient_backend", None),
            kwargs.pop("patient_sampling", None), kwargs.pop("rate_satisfaction", True),
        )
        reward_fn = make_reward(kwargs.pop("reward_fn", "rubric"))
        self.envs = [CBTSessionEnv(patient=patient, reward_fn=reward_fn, **kwargs) for _ in range(num_envs)]
        self.patient, self.reward_fn = patient, reward_fn
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = kwargs.get("render_mode")
        self._done = np.ones(num_envs, dtype=bool)
        self.env_infos: list[dict[str, Any]] = [{} for _ in range(num_envs)]

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        per_env = options.pop("per_env", None) or [{} for _ in range(self.num_envs)]
        if len(per_env) != self.num_envs:
            raise ValueError(f"reset(options={{'per_env': [...]}}) needs {self.num_envs} dicts (got {len(per_env)})")
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)] if not isinstance(seed, Sequence) else list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=[...]) needs {self.num_envs} seeds (got {len(seeds)})")
        chosen = [i for i in range(self.num_envs) if mask[i]]
        for i in chosen:
            env = self.envs[i]
            super(CBTSessionEnv, env).reset(seed=seeds[i])
            env._begin_episode({**options, **per_env[i]})
        self._respond(chosen)
        self._done[chosen] = False
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        for i in chosen:
            self.env_infos[i] = self.envs[i]._info()
            infos = self._add_info(infos, self.env_infos[i], i)
        return self._observations(), infos

    def step(self, actions: Sequence[str]):
        if len(actions) != self.num_envs:
            raise ValueError(f"step() needs {self.num_envs} actions (got {len(actions)})")
        running = [i for i in range(self.num_envs) if not self._done[i]]
        self._respond([i for i in running if self.envs[i]._begin_step(actions[i])])
        ends = {i: self.envs[i]._episode_end() for i in running}
        scored = self.reward_fn(
            [self.envs[i].transcript for i in running],
            [self.envs[i].profile for i in running],
            [any(ends[i]) for i in running],
        ) if running else []
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        for i, reward in zip(running, scored):
            _, rewards[i], terminated[i], truncated[i], info = self.envs[i]._finish_step(reward, *ends[i])
            self.env_infos[i] = info
            infos = self._add_info(infos, info, i)
        self._done |= terminated | truncated
        return self._observations(), rewards, terminated, truncated, infos

    def _respond(self, idx: list[int]) -> None:
        if not idx:
            return
        replies = self.patient.respond([self.envs[i]._state for i in idx], [self.envs[i].transcript for i in idx])
        for i, reply in zip(idx, replies):
            self.envs[i]._apply_reply(reply)

    def _observations(self) -> tuple[str, ...]:
        return tuple(env._observation() for env in self.envs)

    def render(self) -> tuple[str, ...]:
        return self._observations()

    @property
    def transcripts(self):
        return [env.transcript for env in self.envs]

    @property
    def done(self) -> np.ndarray:
        return self._done.copy()
