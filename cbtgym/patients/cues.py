"""Surface cues in a therapist utterance that decide what a simulated patient is ready to share.

Deliberately simple and transparent: the rule-based patient must be fast and
deterministic, and the LLM patient uses the same cues to decide which layers of
its profile it may reveal (so a weak model cannot leak the automatic thought
before the therapist's questions reach it). The cue lists live in ``cues.yaml``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

_CUES_FILE = Path(__file__).with_name("cues.yaml")


@lru_cache(maxsize=1)
def _patterns() -> dict[str, re.Pattern[str]]:
    spec = yaml.safe_load(_CUES_FILE.read_text())
    return {name: re.compile(r"\b(?:" + "|".join(phrases) + r")", re.IGNORECASE) for name, phrases in spec.items()}


@dataclass(frozen=True)
class Cues:
    """What a therapist utterance does, as far as the patient can tell."""

    question: bool
    open_question: bool
    asks_emotions: bool
    asks_experience: bool
    asks_reaction: bool
    asks_thoughts: bool
    asks_deeper: bool
    validates: bool
    presses: bool
    ends_session: bool


def read_cues(utterance: str) -> Cues:
    """Read the cues of one therapist utterance."""
    p = _patterns()
    text = utterance.strip()
    question = "?" in text
    has = {name: bool(pat.search(text)) for name, pat in p.items()}
    return Cues(
        question=question,
        open_question=question and has["open_starter"],
        asks_emotions=question and has["emotions"],
        asks_experience=question and has["experience"],
        asks_reaction=question and has["reaction"],
        asks_thoughts=question and has["thoughts"],
        asks_deeper=question and has["deeper"],
        validates=has["validation"],
        presses=has["pressing"],
        ends_session=has["closing"],
    )
