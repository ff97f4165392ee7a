"""A deterministic patient that answers from its profile by transparent rules."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import yaml

from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .base import PatientReply, PatientState, last_therapist_text, unlock, update_satisfaction
from .course_memory import CourseMemory, homework_status
from .moves import Move, MoveReader, default_reader

_PROMPTS = Path(__file__).with_name("prompts")


@lru_cache(maxsize=1)
def _lines() -> dict:
    return yaml.safe_load((_PROMPTS / "rule_patient_lines.yaml").read_text())


@lru_cache(maxsize=1)
def risk_statements() -> dict[str, str]:
    return yaml.safe_load((_PROMPTS / "risk_statements.yaml").read_text())


def _lc(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != "I " else text


def _pick(options: list[str], *key: object) -> str:
    h = hashlib.sha256(repr(key).encode()).digest()
    return options[h[0] % len(options)]


def layer_text(profile: PatientProfile, layer: str, key: tuple) -> str:
    """The patient's words for one layer of its profile."""
    fields = {
        "emotions": " and ".join(profile.emotions) or "on edge",
        "situation": profile.situation,
        "situation_lc": _lc(profile.situation),
        "reaction": profile.reactions[0],
        "reaction_lc": _lc(profile.reactions[0]),
        "thought": profile.automatic_thoughts[0],
        "belief_lc": _lc(profile.core_belief or ""),
    }
    return _pick(_lines()[layer], *key).format(**fields)


class RulePatient:
    """Fast, deterministic simulated patient for tests and quick experiments.

    It discloses the next layer of its profile (emotions, experience, reaction,
    automatic thought, core belief) when the therapist's move fits that layer in meaning
    (:mod:`cbtgym.patients.moves`): a question about what went through its mind, however
    worded, reaches the automatic thought; a downward-arrow question after it reaches the
    core belief; advice, small talk and lists of therapy words reach nothing. It quotes its
    ground-truth automatic thought only in the reply that discloses that layer. A passive
    patient needs validation first; pressing makes it withdraw, and pressed twice it
    leaves (an active one after three times). It rates its satisfaction each turn by
    :func:`~cbtgym.patients.base.update_satisfaction`.

    In a course (a :class:`~cbtgym.patients.course_memory.CourseMemory` given to :meth:`new_state`)
    the layers earlier sessions reached stay open, and its first reply says whether it did the
    homework it was given (``meta["homework"]``: ``done``, ``not_done`` or ``none``).

    Args:
        reader: Reads therapist turns into moves (default: one :class:`MoveReader` per process,
            MiniLM and the embedded act classifier).
    """

    name = "rule"
    leave_after_pressure = {"passive": 2, "active": 3}

    def __init__(self, reader: MoveReader | None = None) -> None:
        self._reader = reader

    @property
    def reader(self) -> MoveReader:
        if self._reader is None:
            self._reader = default_reader()
        return self._reader

    def new_state(self, profile: PatientProfile, memory: CourseMemory | None = None) -> PatientState:
        return PatientState.opening(profile, memory)

    def opening(self, state: PatientState) -> PatientReply:
        """The reply to the session's opening; in a later session of a course, it reports on the homework."""
        p, memory = state.profile, state.memory
        if memory is None or memory.sessions == 0:
            return PatientReply(_pick(_lines()["opening"][p.attitude], p.id, "opening"), satisfaction=state.satisfaction)
        homework = homework_status(memory)
        text = _pick(_lines()["course_opening"][homework][p.attitude], p.id, "opening", memory.sessions)
        return PatientReply(text, satisfaction=state.satisfaction, meta={"homework": homework})

    def respond(self, states: Sequence[PatientState], transcripts: Sequence[Transcript]) -> list[PatientReply]:
        opens = [not t.therapist_turns or len(t.therapist_turns) == 1 and not t.patient_turns for t in transcripts]
        asked = [i for i, o in enumerate(opens) if not o]
        moves = dict(zip(asked, self.reader.read([last_therapist_text(transcripts[i]) for i in asked])))
        return [self.opening(s) if o else self._respond_one(s, t, moves[i])
                for i, (s, t, o) in enumerate(zip(states, transcripts, opens))]

    def _respond_one(self, state: PatientState, transcript: Transcript, move: Move) -> PatientReply:
        cues = move.cues
        p = state.profile
        key = (p.id, len(transcript.turns))
        if cues.ends_session:
            return PatientReply(_pick(_lines()["closing_reply"], *key), satisfaction=state.satisfaction)
        layer = unlock(state, move)
        sat = update_satisfaction(state, move, layer)
        if cues.presses:
            if state.pressure >= self.leave_after_pressure[p.attitude]:
                state.left = True
                return PatientReply(_pick(_lines()["leave"], *key), sat, left=True, meta={"pressure": state.pressure})
            return PatientReply(_pick(_lines()["withdraw"], *key), sat, meta={"pressure": state.pressure})
        if layer is None:
            return PatientReply(_pick(_lines()["nothing_new"][p.attitude], *key), sat)
        state.disclose(layer, len(transcript.patient_turns))
        text = layer_text(p, layer, key)
        if len(state.disclosed) == 1 and p.risk_flags and not state.risk_said:
            text = f"{text} {risk_statements()[p.risk_flags[0]]}"
            state.risk_said = True
        return PatientReply(text, sat, meta={"disclosed": layer})
