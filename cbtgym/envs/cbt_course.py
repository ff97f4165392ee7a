"""CBTCourse-v0: a course of CBT sessions with one simulated patient who remembers the earlier ones."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from ..llm import render_prompt
from ..patients import CourseMemory
from .course import COURSE_OPENING, PROMPTS_DIR, course_phase, summary_request
from .sessions import EpisodeSpec, OneSessionView, SessionBatch
from .text import text_space, to_charset

__all__ = ["CBTCourseEnv"]


class CBTCourseEnv(OneSessionView, gym.Env[str, str]):
    """Tahir's multi-session protocol: ``sessions`` CBT sessions with one patient, as one episode.

    ## Description
    The agent is the therapist of a whole course. Each session is a session of
    :class:`~cbtgym.envs.cbt_session.CBTSessionEnv` (the same session core,
    :class:`~cbtgym.envs.sessions.SessionBatch`, with the same patients, rewards and limits); the first
    is the assessment, the last the termination, the second the initial phase and the others middle
    sessions (:func:`~cbtgym.envs.course.course_phase`). After every session but the last the agent
    writes a summary for its notes; the next session shows it at the top and opens with
    ``"Welcome back, ..."``. The patient remembers the course
    (:class:`~cbtgym.patients.course_memory.CourseMemory`): the layers it already told stay open, it
    says whether it did the homework set last time (done or not: a stable draw from the course, active
    patients doing it more often), and an LLM patient's prompt says what changed.

    One episode is the whole course, not one session, because Gymnasium's ``reset(seed=...)`` must
    fix the episode it starts and every episode must be independent of the last: a session's
    outcome depends on the ones before it (the memory, the summary), so sessions as episodes would
    carry state across resets, and wrappers and vector envs that reset on their own (autoreset,
    ``RecordEpisodeStatistics``) would cut courses at random. Session boundaries are in ``info``.

    ## Action Space
    ``Text``: the therapist's next utterance, or, right after a session has ended, its summary of that
    session (printable ASCII, cut at ``max_action_chars``).

    ## Observation Space
    ``Text``: during a session, a header (session number, phase, the previous summary) and the dialogue
    of the current session (one ``Therapist: ...`` / ``Patient: ...`` line per turn); after a session,
    the request for its summary with that session's dialogue. The most recent ``max_obs_chars``
    characters. ``info["stage"]`` is ``"session"`` or ``"summary"``.

    ## Starting State
    The opening exchange of the first session, with a profile drawn with ``self.np_random`` (or
    ``options={"profile_id": ..., "attitude": ...}``) and the course's homework seed drawn after it.

    ## Rewards
    During a session, the session's step reward (``reward_fn``, as in ``CBTSession-v0``; components in
    ``info["reward_components"]``); 0 for a summary.

    ## Episode End
    ``terminated``: the last session has ended (closed by the therapist or its budget used up), or the
    patient left a session (it drops out: ``info["dropped_out"]``). A session closed by the therapist
    or cut by its budget (``max_rounds`` and the others) ends only that session. Never ``truncated``;
    wrap it in ``TimeLimit`` for a cap on steps.

    ## Arguments
    sessions: Sessions per course (2 by default: the CPU benchmark's; 20 in the GPU config).
    max_action_chars / max_obs_chars / render_mode: As for ``CBTSession-v0``.
    **session_kwargs: ``CBTSession-v0``'s other arguments (``profiles``, ``patient``, ``patient_backend``,
        ``reward_fn``, ``max_rounds``, ``attitude``, ``opening`` of the first session, ...).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(self, sessions: int = 2, max_action_chars: int = 2000, max_obs_chars: int = 65536,
                 render_mode: str | None = None, **session_kwargs: Any) -> None:
        if not isinstance(sessions, int) or sessions < 1:
            raise ValueError(f"sessions must be an integer >= 1, the sessions of one course (got {sessions!r})")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} (got {render_mode!r})")
        self.batch = SessionBatch.from_kwargs(max_action_chars=max_action_chars, **session_kwargs)
        self.sessions, self.max_obs_chars, self.render_mode = sessions, max_obs_chars, render_mode
        self.first_opening = self.batch.opening
        self.action_space = text_space(max_action_chars)
        self.observation_space = text_space(max_obs_chars)
        self.memory: CourseMemory | None = None
        self.summaries: list[str] = []
        self.session_number = 0
        self.stage = "none"
        self.dropped_out = False

    # -- the Gymnasium API -------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        spec = EpisodeSpec.from_options(seed, options)
        self.batch.opening = self.first_opening
        self.batch.reset([spec], rngs=[self.np_random])
        self.memory = CourseMemory.start(self.profile, int(self.np_random.integers(2**31)))
        self.summaries, self.session_number, self.stage, self.dropped_out = [], 1, "session", False
        return self._observation(), self._info()

    def step(self, action: str):
        if self.stage not in ("session", "summary"):
            raise RuntimeError("the course has ended (or reset() was never called): call reset() first")
        if self.stage == "summary":
            self._next_session(action)
            return self._observation(), 0.0, False, False, self._info()
        result = self.batch.step([action])[0]
        reward = float(result.reward.value)
        if result.terminated or result.truncated:
            self.dropped_out = self.transcript.ended_by == "patient"
            self.stage = "over" if self.dropped_out or self.session_number == self.sessions else "summary"
        return self._observation(), reward, self.stage == "over", False, self._info()

    # -- between sessions ------------------------------------------------------------
    def _next_session(self, summary: str) -> None:
        """Take the agent's summary of the session that ended and open the next, with what the patient remembers."""
        if not isinstance(summary, str):
            raise TypeError(f"action must be the therapist's summary as a str (got {type(summary).__name__})")
        summary = " ".join(to_charset(summary)[: self.batch.max_action_chars].split())
        memory = self.memory.after(self.transcript, summary)
        profile = self.profile
        # Sessions after the first open with the course's welcome back; the batch's limits stay the same.
        self.batch.opening = COURSE_OPENING
        self.batch.reset([EpisodeSpec(None, profile.id, profile.attitude)], rngs=[self.np_random], memories=[memory])
        self.memory = memory
        self.summaries.append(summary)
        self.session_number += 1
        self.stage = "session"

    def _observation(self) -> str:
        if self.session is None:
            return ""
        if self.stage == "summary":
            return to_charset(summary_request(self.transcript))[-self.max_obs_chars:]
        notes = render_prompt(PROMPTS_DIR / "course_notes.txt", summary=self.summaries[-1] or "(none)") if self.summaries else ""
        header = render_prompt(PROMPTS_DIR / "course_header.txt", session=self.session_number, sessions=self.sessions,
                               phase=course_phase(self.session_number, self.sessions), notes=notes.strip())
        return f"{header.strip()}\n{self.transcript.render()}"[-self.max_obs_chars:]

    def _info(self) -> dict[str, Any]:
        info = self.session.info()
        info.update(session=self.session_number, sessions=self.sessions, phase=course_phase(self.session_number, self.sessions),
                    stage=self.stage, memory=self.memory.to_dict(), summaries=list(self.summaries),
                    dropped_out=self.dropped_out)
        return info

