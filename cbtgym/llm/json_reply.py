"""JSON out of a model's reply: tolerant extraction, and length-capped string fields for schemas."""

from __future__ import annotations

import ast
import functools
import json
import re
from typing import Any


@functools.lru_cache(maxsize=None)
def text_field(max_chars: int = 200) -> dict[str, Any]:
    """JSON-schema string with a length cap, for the free-text fields of judge replies.

    Small judges under structured decoding tend to repeat a phrase inside a string until the
    token budget runs out, and the reply never closes; the cap forces the field to end.
    """
    return {"type": "string", "maxLength": max_chars}


_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA_RE = re.compile(r",\s*([}\]])")


def _balanced_objects(text: str) -> list[str]:
    """Every top-level balanced ``{...}`` in ``text``, in order (braces inside "strings" ignored)."""
    out, depth, start, in_str, escape = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
    return out


def _loads_tolerant(candidate: str) -> Any:
    """``json.loads``, then with trailing commas removed, then as a Python literal (single quotes)."""
    for attempt in (candidate, _TRAILING_COMMA_RE.sub(r"\1", candidate)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
    # Single-quoted keys/strings and True/False/None are what small models emit most often.
    # ast.literal_eval evaluates literals only, never code, so it is safe on model output.
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", candidate)))
    for attempt in (candidate, py):
        try:
            return ast.literal_eval(_TRAILING_COMMA_RE.sub(r"\1", attempt))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return None


def extract_json(text: str | None) -> dict[str, Any] | None:
    """The first JSON object in a model's reply, or ``None``.

    Tolerates code fences, prose before or after the object, trailing commas, and single-quoted
    (Python-style) objects. Only a dict counts: a bare list, number or string gives ``None``.
    """
    if not text:
        return None
    candidates: list[str] = [m.group(1) for m in _FENCE_RE.finditer(text)]
    candidates.append(text)
    for chunk in candidates:
        chunk = chunk.strip()
        for obj in [chunk] + _balanced_objects(chunk):
            if not obj.startswith("{"):
                continue
            value = _loads_tolerant(obj)
            if isinstance(value, dict):
                return value
    return None
