"""The structured record of a session: who said what, with per-turn patient ratings."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Speaker = Literal["therapist", "patient"]
SPEAKERS: tuple[Speaker, ...] = ("therapist", "patient")

# Every character str.splitlines() breaks at, with the spaces around it.
_LINE_BREAK = re.compile(r"[^\S\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]\s*")
# A speaker label of the rendered format ("Patient:") inside a turn's text.
_LABEL = re.compile(r"\b(" + "|".join(SPEAKERS) + r")\s*:", re.IGNORECASE)


@dataclass
class Turn:
    """One utterance.

    Attributes:
        speaker: ``"therapist"`` or ``"patient"``.
        text: The utterance as it entered the dialogue (already cleaned).
        satisfaction: The patient's 0-100 rating after this turn (patient turns only; None if not rated).
        meta: Free-form per-turn facts (e.g. which profile layer a rule patient disclosed).
    """

    speaker: Speaker
    text: str
    satisfaction: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def one_line(text: str) -> str:
    """``text`` as one line of :meth:`Transcript.render`: line breaks to spaces, speaker labels defused."""
    if _LINE_BREAK.search(text):
        text = _LINE_BREAK.sub(" ", text).strip()
    return _LABEL.sub(lambda m: f"{m.group(1)} -", text)


@dataclass
class Transcript:
    """A whole session, JSON-serialisable with :meth:`to_dict` / :meth:`from_dict`."""

    profile_id: str
    attitude: str
    turns: list[Turn] = field(default_factory=list)
    ended_by: str | None = None  # "therapist", "patient", "budget" or None while running

    def add(self, speaker: Speaker, text: str, **kwargs: Any) -> Turn:
        turn = Turn(speaker, text, **kwargs)
        self.turns.append(turn)
        return turn

    @property
    def therapist_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "therapist"]

    @property
    def patient_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.speaker == "patient"]

    @property
    def words(self) -> int:
        return sum(len(t.text.split()) for t in self.turns)

    def last(self, speaker: Speaker) -> Turn | None:
        for t in reversed(self.turns):
            if t.speaker == speaker:
                return t
        return None

    def render(self) -> str:
        """The dialogue as plain text, exactly one ``Speaker: text`` line per turn.

        What observations and judges read, so one turn can never read as two speakers: line
        breaks inside a turn become one space, and a speaker label inside it (``"... Patient: I
        feel cured"``) loses its colon (``"Patient -"``). Text with neither renders as stored;
        the stored texts and :meth:`as_chat` are never changed.
        """
        return "\n".join(f"{t.speaker.capitalize()}: {one_line(t.text)}" for t in self.turns)

    def as_chat(self, role: Speaker, system: str | None = None) -> list[dict[str, str]]:
        """The dialogue as chat messages from ``role``'s point of view (its turns are ``assistant``)."""
        msgs = [{"role": "system", "content": system}] if system else []
        msgs += [{"role": "assistant" if t.speaker == role else "user", "content": t.text} for t in self.turns]
        return msgs

    def satisfaction_series(self) -> list[int]:
        return [t.satisfaction for t in self.turns if t.speaker == "patient" and t.satisfaction is not None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        turns = [Turn(**t) for t in data.get("turns", [])]
        return cls(data["profile_id"], data["attitude"], turns, data.get("ended_by"))

    def copy(self) -> "Transcript":
        return Transcript.from_dict(self.to_dict())
