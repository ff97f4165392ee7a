"""What a simulated patient remembers from one session of a course to the next.

A :class:`CourseMemory` is built from the transcripts alone (and the therapist's summary), so the
benchmark can rebuild it from its JSONL records when it resumes, and the env from its own session:

* the profile layers reached in any earlier session: they stay open (the patient does not hide again
  what it already told), so a later session can go on from there (the core belief after the thought);
* the homework the therapist set in the last session (the last therapist turn that sets work for
  between sessions, else a sentence of the summary that does), and whether the patient did it:
  drawn deterministically from the course seed, the profile and the session, active patients doing it
  more often (:data:`HOMEWORK_DONE_RATE`);
* what changed: the layers first reached in the last session and the satisfaction it ended with.

Trust, pressure and satisfaction are not carried: each session is rated afresh from 30 (Witte et al.)
and a passive patient needs some warmth again before it tells anything new.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .base import LAYERS
from .cues import read_cues

#: How often a patient does the homework it was given: an active, cooperative patient mostly does,
#: a passive one mostly does not (the attitudes of LLM4CBT's profiles).
HOMEWORK_DONE_RATE = {"active": 0.8, "passive": 0.3}
_MAX_HOMEWORK_CHARS = 300
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class CourseMemory:
    """What the patient of a course remembers at the start of its next session (immutable).

    Attributes:
        profile_id / attitude: The patient it belongs to.
        seed: The course seed: with the profile and the session it decides whether homework gets done.
        sessions: Sessions held so far (0: the course has not started; nothing is remembered).
        reached: Profile layers reached in any earlier session, in :data:`~cbtgym.patients.base.LAYERS` order.
        new_layers: The layers first reached in the last session.
        homework: What the therapist set in the last session (None: no homework).
        homework_done: Whether the patient did it (None when there was none).
        satisfaction: The patient's last rating in the last session (None: it gave none).
    """

    profile_id: str
    attitude: str
    seed: int | None = None
    sessions: int = 0
    reached: tuple[str, ...] = ()
    new_layers: tuple[str, ...] = ()
    homework: str | None = None
    homework_done: bool | None = None
    satisfaction: int | None = None

    @classmethod
    def start(cls, profile: PatientProfile, seed: int | None) -> "CourseMemory":
        """The memory before the first session of ``profile``'s course."""
        return cls(profile.id, profile.attitude, seed)

    def after(self, transcript: Transcript, summary: str | None = None) -> "CourseMemory":
        """The memory after one more session, read from its transcript (and the therapist's summary).

        Raises:
            ValueError: When the transcript is another patient's.
        """
        if (transcript.profile_id, transcript.attitude) != (self.profile_id, self.attitude):
            raise ValueError(f"course memory of {self.profile_id}/{self.attitude} cannot take a session of "
                             f"{transcript.profile_id}/{transcript.attitude}: keep one memory per patient")
        now = {t.meta.get("disclosed") for t in transcript.patient_turns} - {None}
        reached = tuple(layer for layer in LAYERS if layer in now or layer in self.reached)
        homework = set_homework(transcript, summary)
        session = self.sessions + 1
        rated = [t.satisfaction for t in transcript.patient_turns if t.satisfaction is not None]
        return CourseMemory(
            self.profile_id, self.attitude, self.seed, session, reached,
            new_layers=tuple(layer for layer in reached if layer not in self.reached),
            homework=homework,
            homework_done=None if homework is None else homework_done(self.seed, self.profile_id, self.attitude, session),
            satisfaction=rated[-1] if rated else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; :meth:`from_dict` restores it."""
        return {**asdict(self), "reached": list(self.reached), "new_layers": list(self.new_layers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CourseMemory":
        """The memory :meth:`to_dict` saved."""
        return cls(**{**data, "reached": tuple(data.get("reached", ())), "new_layers": tuple(data.get("new_layers", ()))})


def set_homework(transcript: Transcript, summary: str | None = None) -> str | None:
    """The homework of a session: the last therapist turn that sets some, else the summary's sentence that does."""
    turns = [t.text for t in transcript.therapist_turns[1:] if read_cues(t.text).sets_homework]
    if not turns and summary:
        turns = [s for s in _SENTENCE.split(summary.strip()) if read_cues(s).sets_homework]
    return " ".join(turns[-1].split())[:_MAX_HOMEWORK_CHARS] if turns else None


def homework_status(memory: CourseMemory) -> str:
    """``"done"``, ``"not_done"`` or ``"none"`` (no homework was set in the last session)."""
    if memory.homework is None:
        return "none"
    return "done" if memory.homework_done else "not_done"


def homework_done(seed: int | None, profile_id: str, attitude: str, session: int) -> bool:
    """Whether the patient did the homework of ``session``: a stable draw (the same in every process)
    that comes out true with probability :data:`HOMEWORK_DONE_RATE` of the attitude."""
    digest = hashlib.sha256(repr((seed, profile_id, session)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HOMEWORK_DONE_RATE[attitude]
