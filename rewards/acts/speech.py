"""Transcribed therapist speech made classifiable: fillers out, sentences apart, form cues in.

Real therapist turns are disfluent ("um, so we-we have..."), run several sentences together and
often ask without a "?" ("I'm wondering what went through your mind"). A single sentence
embedding of the raw turn is dominated by padding and by whichever sentence is longest, so the
embedded act classifier reads an utterance through :func:`analyse`:

* :func:`clean` drops fillers, comma-set padding and stutters ("the, the" -> "the");
* :func:`segments` splits the cleaned turn into sentences without their leading discourse markers
  ("So, okay, what happened?" -> "what happened?") and drops the empty ones (back-channels);
* the *main* segment is the last one that is not a check-in tag ("Does that make sense?"), because
  a turn's act is usually carried by where it lands (a question after a summary, a suggestion
  after a reflection), and a check-in after an explanation does not make it a question;
* :func:`cue_features` gives 0/1 form cues (``speech_cues.yaml``) of the whole turn and of its main
  segment.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

CUES_FILE = Path(__file__).with_name("speech_cues.yaml")
#: Words at which the length feature saturates.
LENGTH_CAP = 40
#: Segments at which the segment-count feature saturates.
SEGMENT_CAP = 4
#: Cue features are weaker evidence than the form features ("?"); this scale keeps them from dominating.
CUE_WEIGHT = 0.5

_STUTTER = re.compile(r"\b(\w+)(?:(?:-|,?\s+)\1\b)+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.?!])")
_REPEATED_PUNCT = re.compile(r"([,.?!])(?:\s*,)+|,\s*([.?!])")
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|you've|you'd|yourself)\b", re.IGNORECASE)
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class Cues:
    """The compiled patterns of ``speech_cues.yaml``."""

    fillers: re.Pattern[str]
    padding: re.Pattern[str]
    leading_markers: re.Pattern[str]
    check_in: re.Pattern[str]
    cues: dict[str, re.Pattern[str]]


@functools.lru_cache(maxsize=1)
def load_cues(path: str | Path = CUES_FILE) -> Cues:
    """Compile the cue file (once per process).

    Raises:
        ValueError: When a field is missing or a pattern does not compile; the message names it.
    """
    raw = yaml.safe_load(Path(path).read_text())

    def compile_field(name: str, pattern: object) -> re.Pattern[str]:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{path}: field '{name}' must be a non-empty regular expression string")
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"{path}: field '{name}' is not a valid regular expression ({err}); fix the pattern") from err

    cues = raw.get("cues") if isinstance(raw, dict) else None
    if not isinstance(cues, dict) or not cues:
        raise ValueError(f"{path}: field 'cues' must map cue names to regular expressions")
    return Cues(
        **{k: compile_field(k, raw.get(k)) for k in ("fillers", "padding", "leading_markers", "check_in")},
        cues={name: compile_field(f"cues.{name}", p) for name, p in cues.items()},
    )


def clean(text: str) -> str:
    """The utterance without fillers, comma-set padding and stuttered repeats, whitespace tidied.

    Returns the stripped original when nothing but fillers is left, so there is always text to embed.
    """
    cues = load_cues()
    t = cues.fillers.sub(" ", text)
    t = cues.padding.sub(" ", t)
    t = _STUTTER.sub(r"\1", t)
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", t))
    t = _REPEATED_PUNCT.sub(lambda m: m.group(1) or m.group(2), t).strip(" ,")
    return t if _WORD.search(t) else text.strip()


_PUNCT = re.compile(r"[,.?!;:\"]+")


def unpunctuated(text: str) -> str:
    """The utterance as a bare transcript gives it: lower case, no punctuation but apostrophes.

    The classifier also fits on this form of every example, so that it does not lean on a "?" or a
    sentence break that transcribed speech often lacks.
    """
    return _SPACES.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def segments(text: str) -> list[str]:
    """Sentences of the cleaned utterance without their leading discourse markers; empty ones dropped."""
    markers = load_cues().leading_markers
    out = []
    for sentence in _SENTENCE_END.split(clean(text)):
        s = markers.sub("", sentence.strip()).strip(" ,")
        if _WORD.search(s):
            out.append(s)
    return out


def is_check_in(segment: str) -> bool:
    """Whether a segment only checks in ("Does that make sense?", "How does that sound?")."""
    return bool(load_cues().check_in.match(segment.strip()))


@dataclass(frozen=True)
class Analysed:
    """An utterance read for classification: its cleaned text and its main segment."""

    text: str
    cleaned: str
    main: str
    n_segments: int
    check_in_tail: bool


def analyse(text: str) -> Analysed:
    """Clean and segment one utterance and pick its main segment (see the module docstring)."""
    cleaned = clean(text)
    segs = segments(text) or [cleaned]
    substantive = [s for s in segs if not is_check_in(s)]
    main = (substantive or segs)[-1]
    return Analysed(text, cleaned, main, len(segs), len(substantive) < len(segs) and bool(substantive))


def cue_names() -> list[str]:
    """Names of the columns of :func:`cue_features`, in order."""
    names = list(load_cues().cues)
    return (
        ["ends_with_q", "has_q", "main_ends_with_q", "check_in_tail", "length", "segments", "short", "second_person"]
        + [f"all_{n}" for n in names]
        + [f"main_{n}" for n in names]
    )


def cue_features(items: Sequence[Analysed]) -> np.ndarray:
    """``(n, len(cue_names()))`` float32 form features of analysed utterances."""
    patterns = list(load_cues().cues.values())
    rows = []
    for a in items:
        words = _WORD.findall(a.cleaned)
        n_words = max(len(words), 1)
        form = [
            a.text.strip().endswith("?"),
            "?" in a.text,
            a.main.endswith("?"),
            a.check_in_tail,
            min(len(words), LENGTH_CAP) / LENGTH_CAP,
            min(a.n_segments, SEGMENT_CAP) / SEGMENT_CAP,
            len(words) <= 3,
            min(1.0, 5 * len(_SECOND_PERSON.findall(a.cleaned)) / n_words),
        ]
        whole = [CUE_WEIGHT * bool(p.search(a.cleaned)) for p in patterns]
        main = [CUE_WEIGHT * bool(p.search(a.main)) for p in patterns]
        rows.append([float(v) for v in form] + whole + main)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(cue_names()))
