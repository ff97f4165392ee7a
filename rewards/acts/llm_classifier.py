"""Act labels from an LLM judge: the taxonomy's definitions in a prompt, one JSON label back.

The prompt (``prompts/llm_classifier.txt``) is filled with the definitions and examples of
``taxonomy.yaml``; the utterance and the patient's preceding words are fenced as data. The
model answers ``{"type": ..., "rationale": ...}``; with a backend that supports structured
decoding, ``Sampling.json_schema`` restricts ``type`` to the 14 labels.

Batching and retries go through :class:`cbtgym.llm.LLMCaller`: N utterances cost one
``generate()`` call on the first attempt and one call for the still-unparsed ones on each retry.
A reply that never parses gives a label with ``type=None`` and ``parse_failed=True``, never a
guessed ``oov``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from cbtgym.backends.base import Backend
from cbtgym.llm import LLMCaller, extract_json, fence, render_prompt, text_field

from .labels import ActClassifier, ActLabel, check_batch
from .taxonomy import Taxonomy, load_taxonomy

PROMPT_FILE = Path(__file__).with_name("prompts") / "llm_classifier.txt"

#: Shown in place of the fenced patient utterance when there is none (the session's opening).
NO_CONTEXT = "(none given)"

_ALIASES = {"out_of_vocabulary": "oov", "other": "oov", "none": "oov"}


def render_definitions(taxonomy: Taxonomy) -> str:
    """The taxonomy as prompt text: each category, then each of its types with definition and examples."""
    blocks = []
    for category, description in taxonomy.category_descriptions.items():
        lines = [f"{category.upper()}: {description}"]
        for t in taxonomy.types:
            if t.category == category:
                examples = " | ".join(f'"{e}"' for e in t.examples)
                lines.append(f"  - {t.name}: {t.definition} Examples: {examples}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the reply: ``type`` restricted to ``labels``, plus a ``rationale`` string."""
    return {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": list(labels)}, "rationale": text_field()},
        "required": ["type", "rationale"],
    }


def normalise_label(value: Any, labels: Sequence[str]) -> str | None:
    """``value`` as one of ``labels`` (case, spaces, hyphens and a few aliases forgiven), else ``None``."""
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-/]+", "_", value.strip().lower()).strip("_.")
    key = _ALIASES.get(key, key)
    return key if key in labels else None


def parse_label(text: str, labels: Sequence[str]) -> tuple[str, str] | None:
    """``(type, rationale)`` from a model reply, or ``None`` (which triggers a retry).

    Accepts a JSON object (code fences, prose around it, single quotes tolerated) whose ``type``
    (or ``label``) is one of the labels. A reply without JSON counts only when exactly one label
    appears in it as a word: a bare ``question_emotions`` is clear, a list of labels is not.
    """
    obj = extract_json(text)
    if obj is not None:
        label = normalise_label(obj.get("type", obj.get("label")), labels)
        if label is None:
            return None
        return label, str(obj.get("rationale", "")).strip()
    found = {m for m in re.findall(r"[a-z_]+", (text or "").lower()) if m in labels}
    if len(found) == 1:
        return found.pop(), ""
    return None


class LLMActClassifier(LLMCaller, ActClassifier):
    """Labels therapist utterances with an LLM judge.

    Args:
        backend: The judge model.
        sampling: Decoding settings of the first attempt (default greedy, 160 new tokens); the
            label schema is added when ``use_json_schema``.
        max_attempts: Attempts per utterance before it is reported ``parse_failed``.
        cache: ``None`` (off), ``True``/``"default"``, a path or a :class:`~cbtgym.llm.cache.JudgeCache`.
        use_json_schema: Ask for structured output restricted to the 14 labels.
        retry_temperature: Temperature of retries when the first attempt is greedy.
    """

    name = "acts_llm"
    default_max_new_tokens = 160

    def __init__(self, backend: Backend, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.taxonomy = load_taxonomy()
        self.labels = self.taxonomy.names
        self.schema = label_schema(self.labels)
        self._definitions = render_definitions(self.taxonomy)

    def build_prompt(self, text: str, context: str = "") -> list[dict[str, str]]:
        """The chat messages asking for the label of one utterance (both texts fenced as data)."""
        prompt = render_prompt(
            PROMPT_FILE,
            definitions=self._definitions,
            labels=", ".join(self.labels),
            context=fence(context, "patient_said", notice=False) if context.strip() else NO_CONTEXT,
            utterance=fence(text, "utterance", notice=False),
        )
        return [{"role": "user", "content": prompt}]

    def classify(self, texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> list[ActLabel]:
        texts, ctx = check_batch(texts, contexts, type(self).__name__)
        prompts = [self.build_prompt(t, c) for t, c in zip(texts, ctx)]
        attempted = self.call(prompts, lambda reply: parse_label(reply, self.labels), self.schema)
        out = []
        for a in attempted:
            meta = {"backend": self.backend.name, "attempts": a.attempts, "cache_hits": sum(a.cached)}
            if a.ok:
                label, rationale = a.value  # type: ignore[misc]
                out.append(ActLabel.one_hot(label, self.labels, rationale=rationale, raw=a.last_raw, meta=meta))
            else:
                out.append(
                    ActLabel(
                        type=None,
                        category=None,
                        confidence=None,
                        rationale=f"no parseable label after {a.attempts} attempt(s)",
                        raw=a.last_raw,
                        parse_failed=True,
                        meta=meta,
                    )
                )
        return out

    def __repr__(self) -> str:
        return f"LLMActClassifier(backend={self.backend.name!r})"
