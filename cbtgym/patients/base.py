"""What every simulated patient shares: per-session state, disclosure layers, reply cleaning."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .moves import Move

if TYPE_CHECKING:
    from .course_memory import CourseMemory

#: The order in which an active patient opens up (LLM4CBT: emotions, the experience,
#: the reaction, then how they see it now), with the core belief underneath.
LAYERS = ("emotions", "experience", "reaction", "thought", "belief")

SATISFACTION_START = 30  # Witte et al. start every simulated client at 30/100.
#: The ``disclosed_turn`` of a layer reached in an earlier session of a course.
EARLIER_SESSION = -1


@dataclass
class PatientState:
    """Everything a patient remembers about one session (the transcript lives in the env)."""

    profile: PatientProfile
    disclosed: list[str] = field(default_factory=list)
    #: Parallel to ``disclosed``: how many patient turns the transcript held when each layer
    #: unlocked, i.e. the index of the patient reply it came just before (:data:`EARLIER_SESSION`
    #: for a layer a course reached before this session).
    disclosed_turn: list[int] = field(default_factory=list)
    trust: int = 0
    pressure: int = 0
    satisfaction: int = SATISFACTION_START
    left: bool = False
    #: The patient has voiced its risk statement (rule patient: with its first disclosure; or in the opening).
    risk_said: bool = False
    #: Set by the env before a reply: this reply is the session's last (its round budget is reached).
    last_round: bool = False
    #: What the patient remembers from earlier sessions of its course (None: a single session).
    memory: CourseMemory | None = None

    def copy(self) -> "PatientState":
        """An independent copy (the profile, immutable, is shared)."""
        return replace(self, disclosed=list(self.disclosed), disclosed_turn=list(self.disclosed_turn))

    def to_dict(self) -> dict[str, Any]:
        """Everything but the profile, JSON-serialisable; :meth:`from_dict` with the profile restores it."""
        out = {f.name: _unshared(getattr(self, f.name)) for f in fields(self) if f.name != "profile"}
        out["memory"] = None if self.memory is None else self.memory.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], profile: PatientProfile) -> "PatientState":
        """The state :meth:`to_dict` saved, for ``profile``; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)} - {"profile"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"PatientState.from_dict: unknown field(s) {sorted(unknown)}; expected some of {sorted(known)}")
        from .course_memory import CourseMemory

        data = {k: _unshared(v) for k, v in data.items()}
        if data.get("memory") is not None:
            data["memory"] = CourseMemory.from_dict(data["memory"])
        return cls(profile=profile, **data)

    @classmethod
    def opening(cls, profile: PatientProfile, memory: CourseMemory | None = None) -> "PatientState":
        """The state a session starts in: fresh, or, in a course, with the layers earlier sessions reached open.

        Raises:
            ValueError: When ``memory`` is another patient's.
        """
        if memory is None:
            return cls(profile=profile)
        if (memory.profile_id, memory.attitude) != (profile.id, profile.attitude):
            raise ValueError(f"course memory of {memory.profile_id}/{memory.attitude} given to a session of "
                             f"{profile.id}/{profile.attitude}: pass each patient its own memory")
        return cls(profile=profile, disclosed=list(memory.reached), disclosed_turn=[EARLIER_SESSION] * len(memory.reached),
                   memory=memory)

    def disclose(self, layer: str, turn: int) -> None:
        """Record that ``layer`` unlocked just before patient reply number ``turn`` (0-based)."""
        self.disclosed.append(layer)
        self.disclosed_turn.append(turn)

    @property
    def passive(self) -> bool:
        return self.profile.attitude == "passive"

    def next_layer(self) -> str | None:
        for layer in LAYERS:
            if layer not in self.disclosed and self.layer_available(layer):
                return layer
        return None

    def layer_available(self, layer: str) -> bool:
        p = self.profile
        return {
            "emotions": bool(p.emotions),
            "experience": True,
            "reaction": True,
            "thought": True,
            "belief": p.core_belief is not None,
        }[layer]


def _unshared(value: Any) -> Any:
    """Lists copied, so a saved or restored state never shares one with its source."""
    return list(value) if isinstance(value, list) else value


@dataclass
class PatientReply:
    """One patient turn: the cleaned text, its rating, and whether the patient left."""

    text: str
    satisfaction: int | None = None
    left: bool = False
    meta: dict = field(default_factory=dict)


class Patient(Protocol):
    """A simulated patient serves many sessions at once: its state lives in :class:`PatientState`."""

    def new_state(self, profile: PatientProfile, memory: CourseMemory | None = None) -> PatientState:
        """The state of a new session (``memory``: what the patient remembers of its course)."""
        ...

    def respond(self, states: Sequence[PatientState], transcripts: Sequence[Transcript]) -> list[PatientReply]:
        """Answer the last therapist turn of each transcript (one batched model call at most)."""
        ...


def unlock(state: PatientState, move: Move) -> str | None:
    """Decide which profile layer this therapist move earns, updating trust and pressure.

    Shared by the rule-based and the LLM patient so both open up under the same
    conditions: a move opens the layer it fits in meaning (:meth:`Move.layers`), the core
    belief only once the automatic thought is out; a passive patient needs some warmth
    before it discloses and withdraws when pressed.
    """
    cues = move.cues
    if cues.validates:
        state.trust += 1
    if cues.presses:
        state.pressure += 1
        return None
    if not move.asks:
        return None
    if state.passive and state.trust == 0:
        return None
    for layer in move.layers():
        if layer == "belief" and "thought" not in state.disclosed:
            continue
        if layer not in state.disclosed and state.layer_available(layer):
            return layer
    # A question that asks for nothing in particular lets an active patient go on
    # along its path, but never past the automatic thought: that must be asked for.
    if not state.passive:
        nxt = state.next_layer()
        if nxt in ("emotions", "experience", "reaction"):
            return nxt
    return None


def update_satisfaction(state: PatientState, move: Move, disclosed: str | None) -> int:
    """A transparent rating rule for patients without a model to rate (and a prior for those with one)."""
    cues = move.cues
    delta = 0
    delta += 6 if cues.validates else 0
    delta += 4 if move.asks else 0
    delta += 4 if disclosed else 0
    delta -= 12 if cues.presses else 0
    delta -= 3 if not move.asks and not cues.validates else 0
    state.satisfaction = max(0, min(100, state.satisfaction + delta))
    return state.satisfaction


_TEMPLATE_TOKENS = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]|<\/?(?:im_start|im_end|endoftext)>")
_SELF_LABEL = re.compile(r"^\s*(?:patient|client|me|user)\s*:\s*", re.IGNORECASE)
_OTHER_SPEAKER = re.compile(r"(?:^|\n|\s)(?:therapist|counsel+or|assistant|doctor|dr\.?)\s*:", re.IGNORECASE)
LEAVE_TOKEN = "[LEAVE]"


def clean_reply(text: str) -> tuple[str, dict]:
    """Remove role confusion from a generated patient reply.

    Cuts the text where the model starts speaking as the therapist, strips chat-template
    tokens and a leading ``Patient:`` label, and reports what it changed in ``meta``.
    """
    meta: dict = {}
    out = _TEMPLATE_TOKENS.sub("", text)
    if out != text:
        meta["removed_template_tokens"] = True
    m = _OTHER_SPEAKER.search(out)
    if m and m.start() > 0:
        out = out[: m.start()]
        meta["cut_role_confusion"] = True
    elif m:
        out = out[m.end():]
        meta["cut_role_confusion"] = True
    out = _SELF_LABEL.sub("", out)
    out = " ".join(out.split()).strip().strip('"').strip()
    if LEAVE_TOKEN.lower() in out.lower():
        meta["leave"] = True
        out = re.sub(re.escape(LEAVE_TOKEN), "", out, flags=re.IGNORECASE).strip()
    if not out:
        out = "..."
        meta["empty_after_cleaning"] = True
    return out, meta


def last_therapist_text(transcript: Transcript) -> str:
    """The therapist's latest turn ("" before the first)."""
    turn = transcript.last("therapist")
    return turn.text if turn else ""
