"""Distortion labels from an LLM judge: the taxonomy's definitions in a prompt, a JSON list of labels back.

The prompt (``prompts/llm_detector.txt``) lists the 13 definitions; the thought is fenced as data. The
model answers ``{"labels": [...], "rationale": ...}``; with a backend that supports structured
decoding, ``Sampling.json_schema`` restricts the list to taxonomy labels and ``max_labels`` items.
Batching, retries and the cache go through :class:`cbtgym.llm.LLMCaller`; a reply that never parses
gives ``labels=None`` and ``parse_failed=True`` (counted by the metrics), never "no distortion".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from cbtgym.backends.base import Backend
from cbtgym.llm import LLMCaller, extract_json, fence, render_prompt, text_field

from .labels import DistortionLabels
from .taxonomy import distortion_labels, labels_in, normalise_labels, render_definitions

PROMPT_FILE = Path(__file__).with_name("prompts") / "llm_detector.txt"
#: A reply without JSON that says this (and names no label) means "no distortion".
_NONE_SAID = re.compile(r"\b(no (cognitive )?distortions?|none|no distortion (is )?(present|found))\b", re.IGNORECASE)


def labels_schema(max_labels: int) -> dict[str, Any]:
    """JSON schema of the reply: ``labels``, a list of distinct taxonomy labels (at most ``max_labels``), and a ``rationale``."""
    return {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "string", "enum": list(distortion_labels())},
                       "maxItems": max_labels, "uniqueItems": True},
            "rationale": text_field(),
        },
        "required": ["labels", "rationale"],
    }


def parse_labels_reply(text: str, max_labels: int) -> tuple[tuple[str, ...], str] | None:
    """``(labels, rationale)`` from a reply naming distortions, or ``None`` when it names none usably.

    A JSON object's ``labels`` (or ``distortions``) list counts when every entry is a label or an
    alias (``[]``: no distortion). Without JSON, the labels named in the prose count (by name or
    alias, e.g. "black-and-white thinking"); prose that names none counts only when it says there is
    no distortion. More than ``max_labels`` labels is not an answer.
    """
    obj = extract_json(text)
    if obj is not None:
        values = obj.get("labels", obj.get("distortions"))
        found = normalise_labels(values) if isinstance(values, list) else None
        rationale = str(obj.get("rationale", "")).strip()
    else:
        found, rationale = labels_in(text), ""
        if not found and not _NONE_SAID.search(text or ""):
            return None
    if found is None or len(found) > max_labels:
        return None
    return tuple(found), rationale


class LLMDistortionDetector(LLMCaller):
    """Names the distortions of thoughts with an LLM judge.

    Args:
        backend: The judge model.
        max_labels: Most labels per thought (the schema's ``maxItems``).
        **kwargs: :class:`~cbtgym.llm.generation.LLMCaller` options (``sampling``, ``max_attempts``,
            ``cache``, ``use_json_schema``, ``retry_temperature``).
    """

    name = "distortions_llm"
    default_max_new_tokens = 120

    def __init__(self, backend: Backend, *, max_labels: int = 3, **kwargs: Any) -> None:
        if max_labels < 1:
            raise ValueError(f"max_labels must be >= 1 (got {max_labels})")
        super().__init__(backend, **kwargs)
        self.labels = distortion_labels()
        self.max_labels = max_labels
        self.schema = labels_schema(max_labels)

    def build_prompt(self, thought: str) -> list[dict[str, str]]:
        """The chat messages asking for the distortions of one thought (fenced as data)."""
        prompt = render_prompt(PROMPT_FILE, definitions=render_definitions(), labels=", ".join(self.labels),
                               max_labels=self.max_labels, thought=fence(thought, "thought", notice=False))
        return [{"role": "user", "content": prompt}]

    def detect(self, texts: Sequence[str]) -> list[DistortionLabels]:
        """The distortions of each thought: one ``generate()`` call per attempt for the whole batch."""
        if isinstance(texts, str):
            raise TypeError("detect() takes a list of texts; wrap a single thought in a list")
        attempted = self.call([self.build_prompt(t) for t in texts], lambda reply: parse_labels_reply(reply, self.max_labels),
                              self.schema)
        out = []
        for a in attempted:
            meta = {"backend": self.backend.name, "attempts": a.attempts, "cache_hits": sum(a.cached)}
            if a.ok:
                labels, rationale = a.value  # type: ignore[misc]
                out.append(DistortionLabels(labels=labels, rationale=rationale, raw=a.last_raw, meta=meta))
            else:
                out.append(DistortionLabels(labels=None, rationale=f"no parseable labels after {a.attempts} attempt(s)",
                                            raw=a.last_raw, parse_failed=True, meta=meta))
        return out

    def __repr__(self) -> str:
        return f"LLMDistortionDetector(backend={self.backend.name!r})"
