"""N CBT sessions stepped together, with one patient call and one reward call per step."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..transcript import Transcript
from .cbt_session import CBTSessionEnv
from .sessions import EpisodeSpec, Session, SessionBatch


class CBTSessionVectorEnv(VectorEnv):
    """``num_envs`` sessions that share one patient and one reward function.

    A thin Gymnasium layer over a :class:`~cbtgym.envs.sessions.SessionBatch` (``self.batch``).
    Each :meth:`step` makes ONE batched patient call (one ``backend.generate`` for all
    sessions still running, plus one for satisfaction ratings when the LLM patient rates)
    and ONE reward call. With a deterministic backend the transcripts are the same as
    those of ``num_envs`` sequential :class:`CBTSessionEnv` reset with the same seeds.
    A step that raises (patient backend, reward) leaves every session as it was.

    Autoreset is disabled: a finished session stays finished (its action is ignored and
    its reward is 0) until :meth:`reset`. ``reset(options=...)`` takes the single env's
    options for all sessions, plus ``"reset_mask"`` (which sessions to reset) and
    ``"per_env"`` (a list of per-session option dicts).
    Observations are tuples of strings; ``infos`` follow Gymnasium's vector convention
    (``info[key]`` an object array, ``info["_" + key]`` its mask); ``env_infos`` keeps the last
    reset/step's per-session info dicts as the single env returns them, for code that wants them unvectorized.
    :meth:`fork` copies one session mid-episode into a new batch.

    Args:
        num_envs: Number of parallel sessions.
        **kwargs: As for :class:`CBTSessionEnv`.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED, "render_modes": ["ansi"]}

    def __init__(self, num_envs: int, **kwargs: Any) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        single = CBTSessionEnv(**kwargs)  # validates the arguments and builds the spaces
        self.batch = single.batch
        self.batch.sessions = [None] * num_envs
        self.max_obs_chars = single.max_obs_chars
        self.num_envs = num_envs
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = kwargs.get("render_mode")
        # One generator per session, continued by reset(seed=None) as each single env's np_random is.
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
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
        specs = [EpisodeSpec.from_options(seeds[i], {**options, **per_env[i]}) for i in chosen]
        for i in chosen:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        self.batch.reset(specs, rngs=[self._rngs[i] for i in chosen], slots=chosen)
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        for i in chosen:
            self.env_infos[i] = self.batch.sessions[i].info()
            infos = self._add_info(infos, self.env_infos[i], i)
        return self._observations(), infos

    def step(self, actions: Sequence[str]):
        if len(actions) != self.num_envs:
            raise ValueError(f"step() needs {self.num_envs} actions (got {len(actions)})")
        done = self.done
        results = self.batch.step([None if done[i] else a for i, a in enumerate(actions)])
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        for i, result in enumerate(results):
            if result is None:
                continue
            rewards[i], terminated[i], truncated[i] = float(result.reward.value), result.terminated, result.truncated
            self.env_infos[i] = self.batch.sessions[i].info()
            infos = self._add_info(infos, self.env_infos[i], i)
        return self._observations(), rewards, terminated, truncated, infos

    def fork(self, i: int, n: int = 1) -> SessionBatch:
        """``n`` independent copies of session ``i`` mid-episode, as a batch to step on its own."""
        return self.batch.fork(i, n)

    def snapshot(self, i: int) -> Session:
        """An independent copy of session ``i``."""
        return self.batch.snapshot(i)

    def _observations(self) -> tuple[str, ...]:
        return tuple("" if s is None else s.observation(self.max_obs_chars) for s in self.batch.sessions)

    def render(self) -> tuple[str, ...]:
        return self._observations()

    @property
    def sessions(self) -> list[Session | None]:
        """The sessions, one per sub-env (``profile``, ``transcript``, ``patient_state``...)."""
        return self.batch.sessions

    #: What code written for a list of single envs reads (``venv.envs[i].transcript``, ``.profile``).
    envs = sessions

    @property
    def patient(self):
        return self.batch.patient

    @property
    def reward_fn(self):
        return self.batch.reward_fn

    @property
    def transcripts(self) -> list[Transcript | None]:
        return [None if s is None else s.transcript for s in self.batch.sessions]

    @property
    def done(self) -> np.ndarray:
        return np.array([s is None or s.done for s in self.batch.sessions], dtype=bool)
