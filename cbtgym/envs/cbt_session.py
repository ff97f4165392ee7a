"""CBTSession-v0: one CBT session between a therapist (the agent) and a simulated patient."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import gymnasium as gym

from ..backends.base import Backend, Sampling
from ..profiles.schema import PatientProfile
from .reward import SessionReward
from .sessions import OPENING, EpisodeSpec, OneSessionView, Session, SessionBatch, make_patient, make_reward
from .text import text_space

__all__ = ["OPENING", "CBTSessionEnv", "make_patient", "make_reward"]


class CBTSessionEnv(OneSessionView, gym.Env[str, str]):
    """A single CBT session with a simulated patient.

    ## Description
    The agent is the therapist. Each episode draws a patient profile (persona, disorder,
    situation, reactions, ground-truth automatic thoughts, core belief, attitude, risk
    flags) with the reset seed; a simulated patient built from it answers every
    therapist utterance. The session opens as the LLM4CBT protocol does: the therapist
    says ``"Hi, nice to see you today. How have you been?"`` and the patient replies.

    The session itself lives in a one-session :class:`~cbtgym.envs.sessions.SessionBatch`
    (``env.batch``); the env adds Gymnasium's seeding and spaces. :meth:`fork` copies the
    env mid-episode, :meth:`snapshot` copies its session. A step that raises (the patient's
    backend, the reward) leaves the env exactly as it was, so it can be retried.

    ## Action Space
    ``Text``: the therapist's next utterance (printable ASCII; other characters are
    mapped to ASCII or dropped, and text beyond ``max_action_chars`` is cut).

    ## Observation Space
    ``Text``: the dialogue so far, exactly one ``Therapist: ...`` / ``Patient: ...`` line
    per turn (line breaks inside a turn become spaces; see :meth:`Transcript.render`), the
    most recent ``max_obs_chars`` characters. The structured transcript is in ``info["transcript"]``.

    ## Starting State
    The opening exchange with a profile drawn uniformly with ``self.np_random``
    (or chosen with ``options={"profile_id": ..., "attitude": ...}``). With
    ``options={"crisis_opening": True}`` (a profile with risk flags) the patient's first reply ends
    with its risk statement, so the session starts in a crisis state.

    ## Rewards
    Whatever ``reward_fn`` returns for the step (see :mod:`cbtgym.envs.reward`); the
    default is the embedded rubric of the ``rewards`` package, a deterministic CPU
    proxy (not CTRS). Its components are in ``info["reward_components"]``.

    ## Episode End
    ``terminated``: the therapist closes the session (e.g. "let's end here for today",
    "[END SESSION]") or the patient leaves. ``truncated``: ``max_rounds`` therapist
    turns, ``max_turns`` utterances or ``max_words`` words were reached.

    ## Arguments
    profiles: A profile source for :func:`cbtgym.profiles.load_profiles` (``"bank:train"``
        by default, ``"llm4cbt"``, a path) or a list of :class:`PatientProfile`.
    patient: ``"rule"``, ``"llm"`` or a patient object (shared across envs by the vector env).
        Default: ``"llm"`` when ``patient_backend`` is given, else ``"rule"``.
    patient_backend: Backend for the LLM patient: a :class:`Backend` or a spec for
        :func:`cbtgym.backends.make_backend` (``"embedded"``, ``"vllm:..."``, ...).
    patient_sampling: Decoding for the LLM patient.
    rate_satisfaction: LLM patient rates its satisfaction 0-100 (Witte et al.): ``True``/``"turn"``
        after each reply, ``"end"`` after the session's last, ``False`` never.
    patient_disclosure: What the LLM patient may tell: ``"gated"`` (default; each profile layer reaches
        the model once the therapist's questions reach it, for small models such as SmolLM2) or
        ``"free"`` (the whole profile in its prompt, for capable models). The rule patient is always gated.
    attitude: Force ``"active"`` or ``"passive"`` for every profile.
    reward_fn: A :class:`~cbtgym.envs.reward.SessionReward`; ``"rubric"`` (default, the embedded
        proxy judge), ``"composite"`` / ``"composite:<file.yaml>"`` (weighted judges, see
        :mod:`rewards.composite`) or ``"placeholder"`` (zero, for wiring).
    max_rounds: Therapist turns per session (4, as in LLM4CBT; ``None`` for no limit).
    max_turns / max_words: Budgets of whole sessions (50 turns, 5000 words, as in Tahir).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        profiles: str | Sequence[PatientProfile] = "bank:train",
        patient: str | Any | None = None,
        patient_backend: Backend | str | dict | None = None,
        patient_sampling: Sampling | None = None,
        rate_satisfaction: bool | str = True,
        patient_disclosure: str = "gated",
        attitude: str | None = None,
        reward_fn: SessionReward | str = "rubric",
        max_rounds: int | None = 4,
        max_turns: int = 50,
        max_words: int = 5000,
        opening: str = OPENING,
        max_action_chars: int = 2000,
        max_obs_chars: int = 65536,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} (got {render_mode!r})")
        self.batch = SessionBatch.from_kwargs(
            profiles, patient, patient_backend, patient_sampling, rate_satisfaction, reward_fn, attitude=attitude,
            max_rounds=max_rounds, max_turns=max_turns, max_words=max_words, opening=opening,
            max_action_chars=max_action_chars, patient_disclosure=patient_disclosure,
        )
        self.max_obs_chars = max_obs_chars
        self.render_mode = render_mode
        self.action_space = text_space(max_action_chars)
        self.observation_space = text_space(max_obs_chars)

    # -- the Gymnasium API -------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # The env's np_random draws the profile, as Gymnasium envs draw their starting state.
        self.batch.reset([EpisodeSpec.from_options(seed, options)], rngs=[self.np_random])
        return self._observation(), self.session.info()

    def step(self, action: str):
        if self.session is None:
            raise RuntimeError("reset() was never called: call reset() first")
        result = self.batch.step([action])[0]
        return self._observation(), float(result.reward.value), result.terminated, result.truncated, self.session.info()

    # -- copies --------------------------------------------------------------------
    def fork(self, n: int = 1) -> list["CBTSessionEnv"]:
        """``n`` independent copies of this env mid-episode (transcript, patient state, ``np_random``),
        sharing its profiles, patient and reward function; stepping one never changes another."""
        copies = []
        for batch in (self.batch.fork(0, 1) for _ in range(n)):
            env = copy.copy(self)
            env.batch = batch
            env._np_random = batch.sessions[0].rng  # the copy draws its next profile from its own generator
            copies.append(env)
        return copies

    def snapshot(self) -> Session:
        """An independent copy of the current session."""
        return self.batch.snapshot(0)

    def _observation(self) -> str:
        return self.session.observation(self.max_obs_chars) if self.session is not None else ""

    @property
    def reward_fn(self) -> SessionReward:
        return self.batch.reward_fn

    @property
    def profiles(self) -> list[PatientProfile]:
        return self.batch.profiles
