"""Word-level views of an utterance shared by the reward and the evaluation: both must agree on what a
repeated opening is, or a policy could learn openings that one counts and the other does not."""

from __future__ import annotations

import re

#: Words that make a reply's opening (the evaluation's ``repeated_openings``, the rubric's template penalty).
OPENING_WORDS = 5

_PUNCT = re.compile(r"[^\w\s]")


def words(text: str) -> list[str]:
    """Lowercased words with punctuation stripped (``"I'm here."`` -> ``["im", "here"]``)."""
    return _PUNCT.sub("", text.lower()).split()


def opening(text: str, n: int = OPENING_WORDS) -> tuple[str, ...]:
    """The first ``n`` :func:`words` of ``text``."""
    return tuple(words(text)[:n])


def repeated_trigrams(text: str) -> float:
    """Share of a text's word trigrams that repeat an earlier trigram of the same text (0: none; a reply that
    loops, "I'm glad to have you. I'm glad to have you. I'm glad...", approaches 1). 0 below three trigrams."""
    w = words(text)
    grams = list(zip(w, w[1:], w[2:]))
    return 1.0 - len(set(grams)) / len(grams) if len(grams) >= 3 else 0.0
