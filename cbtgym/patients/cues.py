"""Surface cues of a therapist utterance: warmth, pressure, a closing, homework, a question mark.

These are about tone, which words carry well; which disclosure layer a move reaches is a
matter of meaning and is read by :mod:`cbtgym.patients.moves`. The phrase lists live in
``cues.yaml``; simple regexes keep the patients fast and deterministic.
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
    validates: bool
    presses: bool
    ends_session: bool
    #: It sets work for between sessions (a thought record, an experiment, "this week, write down ...").
    sets_homework: bool = False


def read_cues(utterance: str) -> Cues:
    """Read the cues of one therapist utterance."""
    p = _patterns()
    text = utterance.strip()
    has = {name: bool(pat.search(text)) for name, pat in p.items()}
    return Cues(
        question="?" in text,
        validates=has["validation"],
        presses=has["pressing"],
        ends_session=has["closing"],
        sets_homework=has["homework"],
    )
