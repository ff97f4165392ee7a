"""What the course env and the benchmark's course protocol share: phases and the course prompts.

A course is Tahir's multi-session protocol: N sessions with one patient, the first an assessment,
the last the termination, the second the initial phase and the others middle sessions. After each
session but the last the therapist writes a summary (``prompts/course_summary.txt``) that it reads
before the next one, and every later session opens with ``prompts/course_opening.txt``.
"""

from __future__ import annotations

from pathlib import Path

from ..llm import fence, render_prompt
from ..transcript import Transcript

PHASES = ("assessment", "initial", "middle", "termination")
PROMPTS_DIR = Path(__file__).with_name("prompts")
#: The therapist's first line in every session after the first.
COURSE_OPENING = (PROMPTS_DIR / "course_opening.txt").read_text(encoding="utf-8").strip()


def course_phase(session: int, sessions: int) -> str:
    """Tahir's phase of session ``session`` (1-based) in a course of ``sessions``.

    The first session is the assessment and the last (of two or more) the termination; the
    second of three or more is the initial phase and the rest are middle sessions.
    """
    if not 1 <= session <= sessions:
        raise ValueError(f"session must be within 1..{sessions} (got {session})")
    if session == 1:
        return "assessment"
    if session == sessions:
        return "termination"
    return "initial" if session == 2 else "middle"


def summary_request(transcript: Transcript) -> str:
    """What the therapist is asked after a session: a short summary of it for its notes."""
    return render_prompt(PROMPTS_DIR / "course_summary.txt", transcript=fence(transcript.render(), notice=False)).strip()
