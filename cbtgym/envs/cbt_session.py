"""CBTSession-v0: one CBT session between a therapist (the agent) and a simulated patient."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym

from ..backends.base import Backend, Sampling
from ..patients import LLMPatient, PatientReply, PatientState, RulePatient, read_cues
from ..profiles.schema import ATTITUDES, PatientProfile
from ..transcript import Transcript
from .reward import SessionReward, StepReward
from .text import text_space, to_charset

OPENING = "Hi, nice to see you today. How have you been?"


class CBTSessionEnv(gym.Env[str, str]):
    """A single CBT session with a simulated patient.

    ## Description
    The agent is the therapist. Each episode draws a patient profile (persona, disorder,
    situation, reactions, ground-truth automatic thoughts, core belief, attitude, risk
    flags) with the reset seed; a simulated patient built from it answers every
    therapist utterance. The session opens as the LLM4CBT protocol does: the therapist
    says ``"Hi, nice to see you today. How have you been?"`` and the patient replies.

    ## Action Space
    ``Text``: the therapist's next utterance (printable ASCII; other characters are
    mapped to ASCII or dropped, and text beyond ``max_action_chars`` is cut).

    ## Observation Space
    ``Text``: the dialogue so far, one ``Therapist: ...`` / ``Patient: ...`` line per
    turn (the most recent ``max_obs_chars`` characters). The structured transcript is
    in ``info["transcript"]``.

    ## Starting State
    The opening exchange with a profile drawn uniformly with ``self.np_random``
    (or chosen with ``options={"profile_id": ..., "attitude": ...}``).

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
        self.profiles = _resolve_profiles(profiles)
        if attitude is not None and attitude not in ATTITUDES:
            raise ValueError(f"attitude must be one of {ATTITUDES} or None (got {attitude!r})")
        if max_rounds is not None and max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1 or None (got {max_rounds})")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} (got {render_mode!r})")
        self.patient = make_patient(patient, patient_backend, patient_sampling, rate_satisfaction)
        self.reward_fn = make_reward(reward_fn)
        self.attitude = attitude
        self.max_rounds, self.max_turns, self.max_words = max_rounds, max_turns, max_words
        self.opening = opening
        self.max_action_chars, self.max_obs_chars = max_action_chars, max_obs_chars
        self.render_mode = render_mode
        self.action_space = text_space(max_action_chars)
        self.observation_space = text_space(max_obs_chars)
        self._profile: PatientProfile | None = None
        self._state: PatientState | None = None
        self._transcript: Transcript | None = None
        self._done = True
        self._last_reward: StepReward | None = None

    # -- the Gymnasium API -------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._begin_episode(options or {})
        self._apply_reply(self.patient.respond([self._state], [self._transcript])[0])
        return self._observation(), self._info()

    def step(self, action: str):
        if self._begin_step(action):
            self._apply_reply(self.patient.respond([self._state], [self._transcript])[0])
        terminated, truncated = self._episode_end()
        reward = self.reward_fn([self._transcript], [self._profile], [terminated or truncated])[0]
        return self._finish_step(reward, terminated, truncated)

    def render(self) -> str | None:
        text = self._observation()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # -- phases, shared with the vector env so it can batch patient and judge calls --
    def _begin_episode(self, options: dict[str, Any]) -> None:
        unknown = set(options) - {"profile_id", "attitude"}
        if unknown:
            raise ValueError(f"reset(options=...) accepts 'profile_id' and 'attitude' (got {sorted(unknown)})")
        if "profile_id" in options:
            by_id = {p.id: p for p in self.profiles}
            if options["profile_id"] not in by_id:
                raise ValueError(f"options['profile_id']={options['profile_id']!r} is not among this env's profiles")
            profile = by_id[options["profile_id"]]
        else:
            profile = self.profiles[int(self.np_random.integers(len(self.profiles)))]
        attitude = options.get("attitude", self.attitude)
        if attitude is not None and attitude != profile.attitude:
            profile = profile.with_attitude(attitude)
        self._profile = profile
        self._state = self.patient.new_state(profile)
        self._transcript = Transcript(profile.id, profile.attitude)
        self._transcript.add("therapist", to_charset(self.opening))
        self._done = False
        self._last_reward = None

    def _begin_step(self, action: str) -> bool:
        """Record the therapist's turn; return whether the patient must answer."""
        if self._done:
            raise RuntimeError("the episode has ended (or reset() was never called): call reset() first")
        if not isinstance(action, str):
            raise TypeError(f"action must be the therapist's utterance as a str (got {type(action).__name__})")
        text = to_charset(action)[: self.max_action_chars].strip()
        self._transcript.add("therapist", text)
        rounds = len(self._transcript.therapist_turns) - 1  # the opening is not a round
        self._state.last_round = self.max_rounds is not None and rounds >= self.max_rounds
        if read_cues(text).ends_session:
            self._transcript.ended_by = "therapist"
            return False
        return True

    def _apply_reply(self, reply: PatientReply) -> None:
        self._transcript.add("patient", to_charset(reply.text), satisfaction=reply.satisfaction, meta=reply.meta)
        if reply.left:
            self._transcript.ended_by = "patient"

    def _episode_end(self) -> tuple[bool, bool]:
        terminated = self._transcript.ended_by in ("therapist", "patient")
        rounds = len(self._transcript.therapist_turns) - 1  # the opening is not a round
        truncated = not terminated and (
            (self.max_rounds is not None and rounds >= self.max_rounds)
            or len(self._transcript.turns) >= self.max_turns
            or self._transcript.words >= self.max_words
        )
        if truncated:
            self._transcript.ended_by = "budget"
        return terminated, truncated

    def _finish_step(self, reward: StepReward, terminated: bool, truncated: bool):
        self._done = terminated or truncated
        self._last_reward = reward
        return self._observation(), float(reward.value), terminated, truncated, self._info()

    def _observation(self) -> str:
        if self._transcript is None:
            return ""
        return self._transcript.render()[-self.max_obs_chars:]

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "profile_id": self._profile.id,
            "attitude": self._profile.attitude,
            "round": len(self._transcript.therapist_turns) - 1,
            "satisfaction": self._state.satisfaction,
            "transcript": self._transcript.to_dict(),
        }
        if self._last_reward is not None:
            info["reward_components"] = dict(self._last_reward.components)
            info["reward_info"] = dict(self._last_reward.info)
        return info

    @property
    def transcript(self) -> Transcript | None:
        return self._transcript

    @property
    def profile(self) -> PatientProfile | None:
        return self._profile


def _resolve_profiles(profiles: str | Sequence[PatientProfile]) -> list[PatientProfile]:
    if isinstance(profiles, str):
        from ..profiles import load_profiles

        profiles = load_profiles(profiles)
    profiles = list(profiles)
    if not profiles:
        raise ValueError("profiles is empty: give a profile source such as 'bank:train' or a non-empty list")
    if not all(isinstance(p, PatientProfile) for p in profiles):
        raise TypeError("profiles must be PatientProfile objects (load files with cbtgym.profiles.load_profiles)")
    return profiles


def make_patient(patient, backend, sampling: Sampling | None = None, rate_satisfaction: bool | str = True):
    """Build a patient from a name ('rule' | 'llm') or return the given patient object."""
    if patient is None:
        patient = "llm" if backend is not None else "rule"
    if not isinstance(patient, str):
        return patient
    if patient == "rule":
        if backend is not None:
            raise ValueError("patient='rule' takes no patient_backend; use patient='llm' to play the patient with a model")
        return RulePatient()
    if patient == "llm":
        if backend is None:
            raise ValueError("patient='llm' needs patient_backend (e.g. 'embedded', 'vllm:<model dir>', a Backend)")
        from ..backends.factory import make_backend

        return LLMPatient(make_backend(backend), sampling=sampling, rate_satisfaction=rate_satisfaction)
    raise ValueError(f"patient must be 'rule', 'llm' or a patient object (got {patient!r})")


def make_reward(reward_fn: SessionReward | str) -> SessionReward:
    """Resolve the env's reward: a callable, or 'rubric' / 'placeholder' / 'composite' / 'composite:<path.yaml>'.

    ``"composite"`` is :class:`rewards.composite.CompositeReward` with its default config
    (``rewards/composite_default.yaml``, embedded judges only); ``"composite:<path.yaml>"`` reads
    another config (components that need a model name a backend spec there).
    """
    if callable(reward_fn):
        return reward_fn
    if reward_fn == "placeholder":
        from .reward import PlaceholderReward

        return PlaceholderReward()
    if reward_fn == "rubric":
        from rewards.rubric import RubricReward

        return RubricReward()
    if isinstance(reward_fn, str) and (reward_fn == "composite" or reward_fn.startswith("composite:")):
        from rewards.composite import CompositeReward

        path = reward_fn.partition(":")[2].strip()
        if reward_fn.startswith("composite:") and not path:
            raise ValueError("reward_fn='composite:' needs a path to a YAML config after the colon, or use 'composite'")
        return CompositeReward.from_config(path or None)
    raise ValueError(
        "reward_fn must be a SessionReward callable, 'rubric', 'placeholder', 'composite' or "
        f"'composite:<path.yaml>' (got {reward_fn!r})"
    )
