"""Text spaces for dialogue, and the mapping of model output onto their charset.

gymnasium's ``spaces.Text`` defaults to 62 alphanumeric characters, which would
reject "Hello, how are you?". The dialogue space uses printable ASCII plus newline;
text an LLM writes outside it (curly quotes, dashes, accents, emoji) is mapped to
its closest ASCII form or dropped, so observations always lie in the space.
"""

from __future__ import annotations

import string
import unicodedata

from gymnasium import spaces

CHARSET = frozenset(string.printable) - frozenset("\x0b\x0c\r")
_REPLACEMENTS = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
    "\u2026": "...", "\u00a0": " ", "\t": " ",
})


def to_charset(text: str) -> str:
    """Map text onto :data:`CHARSET`: typographic punctuation to ASCII, accents stripped, the rest dropped."""
    text = unicodedata.normalize("NFKD", text.translate(_REPLACEMENTS))
    return "".join(ch for ch in text if ch in CHARSET)


def text_space(max_length: int, min_length: int = 0) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=min_length, charset=CHARSET)
