"""The session core: N CBT sessions stepped together, forked and snapshotted.

:class:`SessionBatch` owns the sessions and holds everything the environments do:
drawing a profile, the opening exchange, recording a therapist turn, one batched
patient call and one batched reward call per step, the end of an episode. The
Gymnasium environments (:class:`~cbtgym.envs.cbt_session.CBTSessionEnv`,
:class:`~cbtgym.envs.vector.CBTSessionVectorEnv`), the rollout loop, preference
collection and GRPO are thin layers over it.

A step is atomic: when the patient's backend or the reward function raises, every
stepped session is put back exactly as it was (transcript, patient state, flags)
and the error propagates, so the step can simply be retried.

:meth:`SessionBatch.fork` copies sessions mid-episode (transcript, patient state,
random generator) into a new batch that shares the patient and the reward
function and can be stepped on its own, e.g. one different action per copy.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from gymnasium.utils import seeding

from ..backends.base import Backend, Sampling
from ..patients import CourseMemory, LLMPatient, PatientReply, PatientState, RulePatient, read_cues
from ..patients.rule_patient import risk_statements
from ..profiles.schema import ATTITUDES, PatientProfile
from ..transcript import Transcript
from .reward import SessionReward, StepReward
from .text import to_charset

OPENING = "Hi, nice to see you today. How have you been?"


@dataclass(frozen=True)
class EpisodeSpec:
    """Which session to run: a seed, and optionally a fixed profile and attitude.

    ``seed`` draws the profile (when ``profile_id`` is not given) with
    ``gymnasium.utils.seeding.np_random(seed)``; ``None`` continues a generator given to
    :meth:`SessionBatch.reset` (Gymnasium's ``reset(seed=None)``). With ``crisis_opening`` the
    patient's first reply ends with its risk statement (the profile must carry a risk flag): the
    session starts in a crisis state, whatever the therapist's questions would have reached.
    """

    seed: int | None
    profile_id: str | None = None
    attitude: str | None = None
    crisis_opening: bool = False

    @property
    def key(self) -> str:
        return f"{self.profile_id or 'drawn'}|{self.attitude or 'profile'}|{self.seed}" + ("|crisis" if self.crisis_opening else "")

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.profile_id:
            opts["profile_id"] = self.profile_id
        if self.attitude:
            opts["attitude"] = self.attitude
        if self.crisis_opening:
            opts["crisis_opening"] = True
        return opts

    @classmethod
    def from_options(cls, seed: int | None, options: dict[str, Any] | None) -> "EpisodeSpec":
        """The spec of a Gymnasium ``reset(seed=..., options=...)`` call (options: ``profile_id``, ``attitude``,
        ``crisis_opening``)."""
        options = options or {}
        unknown = set(options) - {"profile_id", "attitude", "crisis_opening"}
        if unknown:
            raise ValueError(f"reset(options=...) accepts 'profile_id', 'attitude' and 'crisis_opening' (got {sorted(unknown)})")
        crisis = options.get("crisis_opening", False)
        if not isinstance(crisis, bool):
            raise ValueError(f"reset(options={{'crisis_opening': ...}}) must be True or False (got {crisis!r})")
        return cls(seed, options.get("profile_id"), options.get("attitude"), crisis)


@dataclass
class Session:
    """One session's whole state; :meth:`copy` gives an independent one.

    Attributes:
        profile: The patient profile (with the session's attitude).
        patient_state: What the simulated patient remembers (disclosures, trust, satisfaction).
        transcript: Who said what so far.
        rng: The generator that drew the profile (the single env's ``np_random``).
        done: Whether the session has ended (terminated or truncated).
        last_reward: The reward of the last step (None before the first).
    """

    profile: PatientProfile
    patient_state: PatientState
    transcript: Transcript
    rng: np.random.Generator
    done: bool = False
    last_reward: StepReward | None = None

    @property
    def round(self) -> int:
        """Therapist turns after the opening."""
        return len(self.transcript.therapist_turns) - 1

    def copy(self) -> "Session":
        """An independent copy: stepping either never changes the other (the profile, immutable, is shared)."""
        return Session(self.profile, self.patient_state.copy(), self.transcript.copy(), copy.deepcopy(self.rng),
                       self.done, copy.deepcopy(self.last_reward))

    def observation(self, max_chars: int) -> str:
        """The dialogue as the agent sees it: the last ``max_chars`` characters of :meth:`Transcript.render`."""
        return self.transcript.render()[-max_chars:]

    def info(self) -> dict[str, Any]:
        """The env's ``info`` dict for this session."""
        info: dict[str, Any] = {
            "profile_id": self.profile.id,
            "attitude": self.profile.attitude,
            "round": self.round,
            "satisfaction": self.patient_state.satisfaction,
            "transcript": self.transcript.to_dict(),
        }
        if self.last_reward is not None:
            info["reward_components"] = dict(self.last_reward.components)
            info["reward_info"] = dict(self.last_reward.info)
        return info


@dataclass
class StepResult:
    """The outcome of one session's step: its reward and how (whether) the episode ended."""

    reward: StepReward
    terminated: bool
    truncated: bool


@dataclass
class _Mark:
    """What a step may change in a session, kept to undo a step that raised."""

    turns: int
    ended_by: str | None
    patient_state: PatientState
    done: bool
    last_reward: StepReward | None

    @classmethod
    def of(cls, s: Session) -> "_Mark":
        return cls(len(s.transcript.turns), s.transcript.ended_by, s.patient_state.copy(), s.done, s.last_reward)

    def restore(self, s: Session) -> None:
        del s.transcript.turns[self.turns:]
        s.transcript.ended_by = self.ended_by
        s.patient_state = self.patient_state
        s.done, s.last_reward = self.done, self.last_reward


class SessionBatch:
    """Sessions that share one patient, one reward function and one set of limits.

    Per :meth:`step`: one ``patient.respond`` call for every session the patient must
    answer (one backend call, plus one for ratings when an LLM patient rates) and one
    ``reward_fn`` call for every stepped session.

    * Start: the therapist's ``opening`` and the patient's reply, the profile drawn with the
      session's generator (or named by the spec).
    * Action: the therapist's next utterance (a str), mapped onto the env's text space.
    * Observation: :meth:`Session.observation` (the rendered dialogue) and :meth:`Session.info`.
    * Reward: ``reward_fn(transcripts, profiles, done)``, one :class:`StepReward` per stepped session.
    * End: terminated when the therapist closes the session or the patient leaves; truncated at
      ``max_rounds`` therapist turns, ``max_turns`` utterances or ``max_words`` words.

    Args:
        profiles: The profiles :meth:`reset` draws from (non-empty list).
        patient: A patient object (:class:`~cbtgym.patients.RulePatient`, :class:`~cbtgym.patients.LLMPatient`).
        reward_fn: A :class:`~cbtgym.envs.reward.SessionReward`.
        attitude: Force ``"active"`` or ``"passive"`` for every profile.
        max_rounds: Therapist turns per session after the opening (``None``: no limit).
        max_turns / max_words: Budgets of whole sessions.
        opening: The therapist's first line.
        max_action_chars: Therapist text beyond this is cut.
    """

    def __init__(self, profiles: Sequence[PatientProfile], patient: Any, reward_fn: SessionReward, *,
                 attitude: str | None = None, max_rounds: int | None = 4, max_turns: int = 50, max_words: int = 5000,
                 opening: str = OPENING, max_action_chars: int = 2000) -> None:
        if attitude is not None and attitude not in ATTITUDES:
            raise ValueError(f"attitude must be one of {ATTITUDES} or None (got {attitude!r})")
        if max_rounds is not None and max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1 or None (got {max_rounds})")
        self.profiles = list(profiles)
        self.patient, self.reward_fn = patient, reward_fn
        self.attitude = attitude
        self.max_rounds, self.max_turns, self.max_words = max_rounds, max_turns, max_words
        self.opening, self.max_action_chars = opening, max_action_chars
        #: The sessions, in order; ``None`` marks a slot never reset (a vector env reset with a mask).
        self.sessions: list[Session | None] = []

    @classmethod
    def from_kwargs(cls, profiles: str | Sequence[PatientProfile] = "bank:train", patient: str | Any | None = None,
                    patient_backend: Backend | str | dict | None = None, patient_sampling: Sampling | None = None,
                    rate_satisfaction: bool | str = True, reward_fn: SessionReward | str = "rubric",
                    patient_disclosure: str = "gated",
                    max_obs_chars: int | None = None, render_mode: str | None = None, **limits: Any) -> "SessionBatch":
        """A batch from :class:`~cbtgym.envs.cbt_session.CBTSessionEnv`'s arguments, names resolved as it does
        (``max_obs_chars`` and ``render_mode`` are how an env shows a session: ignored here)."""
        return cls(resolve_profiles(profiles), make_patient(patient, patient_backend, patient_sampling, rate_satisfaction,
                                                                   patient_disclosure),
                   make_reward(reward_fn), **limits)

    def __len__(self) -> int:
        return len(self.sessions)

    # -- starting sessions ---------------------------------------------------------
    def reset(self, specs: Sequence[EpisodeSpec], *, rngs: Sequence[np.random.Generator | None] | None = None,
              slots: Sequence[int] | None = None, memories: Sequence[CourseMemory | None] | None = None) -> list[Session]:
        """Start one session per spec, with the opening exchange (one patient call for all).

        Args:
            specs: What to start (seed, optional profile and attitude).
            rngs: Generators to draw profiles with, one per spec (a ``None`` entry: ``spec.seed``'s);
                a given generator becomes the session's ``rng``, so it continues across resets.
            slots: Which sessions to replace (default: the batch becomes exactly these sessions).
            memories: What each patient remembers of its course (one per spec, ``None`` entries for single
                sessions; see :class:`~cbtgym.patients.course_memory.CourseMemory`); the spec must name the
                memory's profile.

        Returns the new sessions. When the patient raises, the batch and the generators are left as they were.
        """
        rngs = list(rngs) if rngs is not None else [None] * len(specs)
        memories = list(memories) if memories is not None else [None] * len(specs)
        if len(rngs) != len(specs) or len(memories) != len(specs) or (slots is not None and len(slots) != len(specs)):
            raise ValueError(f"reset() needs one rng, memory and slot per spec ({len(specs)} specs, {len(rngs)} rngs, "
                             f"{len(memories)} memories, {'no' if slots is None else len(slots)} slots)")
        rngs = [seeding.np_random(spec.seed)[0] if rng is None else rng for spec, rng in zip(specs, rngs)]
        states = [rng.bit_generator.state for rng in rngs]
        try:
            fresh = [self._start(spec, rng, memory) for spec, rng, memory in zip(specs, rngs, memories)]
            self._answer(fresh, [spec.crisis_opening for spec in specs])
        except BaseException:
            for rng, state in zip(rngs, states):
                rng.bit_generator.state = state
            raise
        if slots is None:
            self.sessions = fresh
        else:
            self.sessions += [None] * (max(slots, default=-1) + 1 - len(self.sessions))
            for slot, session in zip(slots, fresh):
                self.sessions[slot] = session
        return fresh

    def _start(self, spec: EpisodeSpec, rng: np.random.Generator, memory: CourseMemory | None = None) -> Session:
        if spec.profile_id is not None:
            by_id = {p.id: p for p in self.profiles}
            if spec.profile_id not in by_id:
                raise ValueError(f"options['profile_id']={spec.profile_id!r} is not among this env's profiles")
            profile = by_id[spec.profile_id]
        else:
            profile = self.profiles[int(rng.integers(len(self.profiles)))]
        if spec.crisis_opening and not profile.risk_flags:
            raise ValueError(f"crisis_opening=True but profile {profile.id!r} has no risk_flags: pin a profile with "
                             "risk flags (options['profile_id']) or leave crisis_opening off")
        attitude = spec.attitude or self.attitude
        if attitude is not None and attitude != profile.attitude:
            profile = profile.with_attitude(attitude)
        transcript = Transcript(profile.id, profile.attitude)
        transcript.add("therapist", to_charset(self.opening))
        # Patients written before courses existed take no memory; they are only asked for one in a course.
        state = self.patient.new_state(profile) if memory is None else self.patient.new_state(profile, memory)
        return Session(profile, state, transcript, rng)

    # -- stepping ------------------------------------------------------------------
    def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
        """Record each session's therapist action, let the patient answer, score the step.

        Args:
            actions: One per session: the therapist's utterance (mapped onto the text space and cut
                to ``max_action_chars``), or ``None`` to leave that session out of this step.

        Returns one :class:`StepResult` per session (``None`` for those left out). The step is
        atomic: if the patient or the reward function raises, no session changes.
        """
        if len(actions) != len(self.sessions):
            raise ValueError(f"step() needs one action per session ({len(self.sessions)}; got {len(actions)})")
        live = [i for i, a in enumerate(actions) if a is not None]
        for i in live:
            if self.sessions[i] is None or self.sessions[i].done:
                raise RuntimeError("the episode has ended (or reset() was never called): call reset() first")
            if not isinstance(actions[i], str):
                raise TypeError(f"action must be the therapist's utterance as a str (got {type(actions[i]).__name__})")
        sessions = [self.sessions[i] for i in live]
        marks = [_Mark.of(s) for s in sessions]
        try:
            self._answer([s for s, a in zip(sessions, (actions[i] for i in live)) if self._record_action(s, a)])
            ends = [self._episode_end(s) for s in sessions]
            rewards = self._reward([s.transcript for s in sessions], [s.profile for s in sessions],
                                   [term or trunc for term, trunc in ends]) if sessions else []
        except BaseException:
            for s, mark in zip(sessions, marks):
                mark.restore(s)
            raise
        results: list[StepResult | None] = [None] * len(self.sessions)
        for i, s, reward, (term, trunc) in zip(live, sessions, rewards, ends):
            s.done, s.last_reward = term or trunc, reward
            results[i] = StepResult(reward, term, trunc)
        return results

    def _record_action(self, s: Session, action: str) -> bool:
        """Record the therapist's turn; return whether the patient must answer."""
        text = to_charset(action)[: self.max_action_chars].strip()
        s.transcript.add("therapist", text)
        s.patient_state.last_round = self.max_rounds is not None and s.round >= self.max_rounds
        if read_cues(text).ends_session:
            s.transcript.ended_by = "therapist"
            return False
        return True

    def _answer(self, sessions: Sequence[Session], crisis_openings: Sequence[bool] | None = None) -> None:
        if not sessions:
            return
        replies = self.patient.respond([s.patient_state for s in sessions], [s.transcript for s in sessions])
        for s, reply, crisis in zip(sessions, replies, crisis_openings or [False] * len(sessions)):
            if crisis:
                reply = _with_risk_statement(reply, s.patient_state)
            _apply_reply(s.transcript, reply)

    def _episode_end(self, s: Session) -> tuple[bool, bool]:
        t = s.transcript
        terminated = t.ended_by in ("therapist", "patient")
        truncated = not terminated and (
            (self.max_rounds is not None and s.round >= self.max_rounds)
            or len(t.turns) >= self.max_turns
            or t.words >= self.max_words
        )
        if truncated:
            t.ended_by = "budget"
        return terminated, truncated

    def _reward(self, transcripts, profiles, done) -> list[StepReward]:
        # The one place the core calls the reward (contract order: transcripts, profiles, done).
        return self.reward_fn(transcripts, profiles, done)

    # -- copies ----------------------------------------------------------------------
    def snapshot(self, i: int) -> Session:
        """An independent copy of session ``i`` as it is now."""
        return self._session(i).copy()

    def fork(self, i: int | Sequence[int], n: int = 1) -> "SessionBatch":
        """A new batch of ``n`` independent copies of session ``i`` (or of each of several sessions,
        session-major: ``fork([a, b], 2)`` holds a, a, b, b), sharing this batch's patient, reward
        function and limits; stepping it never changes this batch."""
        if n < 1:
            raise ValueError(f"fork(n={n}): n must be >= 1")
        idx = [i] if isinstance(i, (int, np.integer)) else list(i)
        return self.with_sessions([self._session(j).copy() for j in idx for _ in range(n)])

    def with_sessions(self, sessions: Sequence[Session]) -> "SessionBatch":
        """A batch over ``sessions`` (taken as they are, not copied) with this batch's patient, reward and limits."""
        other = copy.copy(self)
        other.sessions = list(sessions)
        return other

    def _session(self, i: int) -> Session:
        s = self.sessions[i]
        if s is None:
            raise RuntimeError(f"session {i} was never reset: call reset() first")
        return s


def _with_risk_statement(reply: PatientReply, state: PatientState) -> PatientReply:
    """``reply`` followed by the profile's risk statement, which the patient then counts as said."""
    state.risk_said = True
    statement = risk_statements()[state.profile.risk_flags[0]]
    return dataclasses.replace(reply, text=f"{reply.text} {statement}", meta={**reply.meta, "crisis_opening": True})


def _apply_reply(transcript: Transcript, reply: PatientReply) -> None:
    transcript.add("patient", to_charset(reply.text), satisfaction=reply.satisfaction, meta=reply.meta)
    if reply.left:
        transcript.ended_by = "patient"


def resolve_profiles(profiles: str | Sequence[PatientProfile]) -> list[PatientProfile]:
    """A profile source for :func:`cbtgym.profiles.load_profiles`, or a list of profiles, as a non-empty list."""
    if isinstance(profiles, str):
        from ..profiles import load_profiles

        profiles = load_profiles(profiles)
    profiles = list(profiles)
    if not profiles:
        raise ValueError("profiles is empty: give a profile source such as 'bank:train' or a non-empty list")
    if not all(isinstance(p, PatientProfile) for p in profiles):
        raise TypeError("profiles must be PatientProfile objects (load files with cbtgym.profiles.load_profiles)")
    return profiles


def make_patient(patient, backend, sampling: Sampling | None = None, rate_satisfaction: bool | str = True,
                 disclosure: str = "gated"):
    """Build a patient from a name ('rule' | 'llm') or return the given patient object
    (``disclosure``: the LLM patient's ``gated`` or ``free``; see :class:`~cbtgym.patients.LLMPatient`)."""
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

        return LLMPatient(make_backend(backend), sampling=sampling, rate_satisfaction=rate_satisfaction, disclosure=disclosure)
    raise ValueError(f"patient must be 'rule', 'llm' or a patient object (got {patient!r})")


def make_reward(reward_fn: SessionReward | str) -> SessionReward:
    """Resolve the env's reward: a callable, or 'rubric' / 'placeholder' / 'composite' / 'composite:<path.yaml>'.

    ``"composite"`` is :class:`rewards.composite.CompositeReward` with its default config
    (``rewards/composite_default.yaml``, embedded judges only); ``"composite:llm"`` the LLM judges of
    ``rewards/composite_llm.yaml``; ``"composite:<path.yaml>"`` reads another config. Each may end in
    ``@<backend spec>``, the model of the config's ``judge`` backend (:mod:`rewards.composite_spec`).
    """
    if callable(reward_fn):
        return reward_fn
    if reward_fn == "placeholder":
        from .reward import PlaceholderReward

        return PlaceholderReward()
    if reward_fn == "rubric":
        from rewards.rubric import RubricReward

        return RubricReward()
    from rewards.composite_spec import FORMS, is_composite, make_composite

    if is_composite(reward_fn):
        return make_composite(reward_fn)
    raise ValueError(f"reward_fn must be a SessionReward callable, 'rubric', 'placeholder' or {FORMS} (got {reward_fn!r})")


class OneSessionView:
    """What an env stepping one session of ``self.batch`` (a :class:`SessionBatch`) shows of it; the env gives
    ``_observation()`` and ``render_mode``."""

    batch: SessionBatch

    def render(self) -> str | None:
        text = self._observation()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    @property
    def session(self) -> Session | None:
        """The current session (None before the first reset)."""
        return self.batch.sessions[0] if self.batch.sessions else None

    @property
    def transcript(self) -> Transcript | None:
        return self.session.transcript if self.session is not None else None

    @property
    def profile(self) -> PatientProfile | None:
        return self.session.profile if self.session is not None else None

    @property
    def patient(self):
        return self.batch.patient
