"""CTRS judge: an LLM rates the therapist on the 11 items of the Cognitive Therapy Rating Scale.

The items (Young & Beck, 1980) and cbtgym's paraphrased anchors for 0/2/4/6 live in
``rewards/prompts/ctrs_items.yaml``; the prompts in ``rewards/prompts/ctrs.txt`` (0-6 numbers)
and ``rewards/prompts/ctrs_tahir.txt`` (Tahir 2024's word ratings).

Per item the judge returns a quote from the transcript, a one-sentence justification and a
score (asked in that order so the model reasons before it commits to a number). Items that a
short session cannot show are *not applicable* (``None``), not 0: by default Homework needs at
least 8 therapist turns and Pacing at least 6 (``not_applicable_below_rounds``). The total is the
mean (default) or the sum of the applicable items; ``meta["n_items"]`` says how many.

Variants:

* ``"standard"``: 0-6 per item, mean of applicable items, failures give total ``None``.
* ``"tahir"``: Tahir (2024) asked Gemini 1.5 Pro for one word per item. His public evaluation
  script (``WORD_TO_NUMBER``) maps ten words to 1..10: Severely Deficient 1, Very Poor 2, Poor 3,
  Unsatisfactory 4, Below Average 5, Adequate 6, Good 7, Very Good 8, Excellent 9, Outstanding 10,
  and sums the 11 items (his paper's totals, e.g. 67.86, are on that 11-110 range). An unusable
  rating there became the lowest score, so this variant defaults to ``failure_policy="lowest"``
  (still flagged ``parse_failed``). The eight-word list "Severely Deficient, Poor, Mediocre,
  Satisfactory, Good, Very Good, Excellent, Outstanding" that circulates does not match the
  script we could read, so we follow the script; the words are data in ``ctrs_items.yaml``. As
  described for that study, the patient's first and the therapist's last message are dropped
  before rating (``trim_edges``; we could not confirm this step in the public script). Turn
  ``trim_edges`` off when the judge is a TRL reward: the completion *is* the therapist's last message.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from cbtgym.backends.base import Backend
from cbtgym.profiles.schema import PatientProfile
from cbtgym.transcript import Transcript

from cbtgym.llm import extract_json, fence, render_prompt, text_field

from .llm_judge import PROMPT_DIR, LLMJudge, align_profiles
from .types import JudgeResult

Variant = Literal["standard", "tahir"]
Aggregate = Literal["mean", "sum"]
VARIANTS: tuple[str, ...] = ("standard", "tahir")
AGGREGATES: tuple[str, ...] = ("mean", "sum")
ITEMS_FILE = PROMPT_DIR / "ctrs_items.yaml"

#: Default minimum number of therapist turns for an item to be rated (standard variant).
DEFAULT_NOT_APPLICABLE_BELOW_ROUNDS: dict[str, int] = {"homework": 8, "pacing": 6}


@dataclass(frozen=True)
class CTRSItem:
    """One CTRS item: its key (sub-score name), title, focus line and 0/2/4/6 anchors."""

    key: str
    name: str
    focus: str
    anchors: Mapping[int, str]


@dataclass(frozen=True)
class CTRSScale:
    """A rating scale: numeric range, anchor labels, and (word scales) the word -> number map."""

    name: str
    min: int
    max: int
    anchor_labels: Mapping[int, str]
    words: Mapping[str, int] = field(default_factory=dict)

    def parse_score(self, value: Any) -> float:
        """A rating as a number on this scale; ``ValueError`` naming the problem otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"score must be a number or rating word, not {value!r}")
        if isinstance(value, str) and self.words:
            word = re.sub(r"[^a-z ]", "", value.lower()).strip()
            word = re.sub(r"\s+", " ", word)
            lookup = {w.lower(): n for w, n in self.words.items()}
            if word in lookup:
                return float(lookup[word])
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*", value)
            if not m:
                raise ValueError(f"score {value!r} is not a number" + (" or a rating word" if self.words else ""))
            value = float(m.group(1))
        if not isinstance(value, (int, float)):
            raise ValueError(f"score must be a number (got {type(value).__name__})")
        if not self.min <= value <= self.max or value != int(value):
            raise ValueError(f"score {value} is not a whole number from {self.min} to {self.max}")
        return float(value)


@functools.lru_cache(maxsize=None)
def load_ctrs(path: str = str(ITEMS_FILE)) -> tuple[tuple[CTRSItem, ...], dict[str, CTRSScale]]:
    """The items and scales from ``ctrs_items.yaml`` (validated once, then cached)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    items = []
    for i, raw in enumerate(data["items"]):
        missing = {"key", "name", "focus", "anchors"} - set(raw)
        if missing:
            raise ValueError(f"{path}: items[{i}] lacks {sorted(missing)}")
        anchors = {int(k): str(v) for k, v in raw["anchors"].items()}
        if sorted(anchors) != [0, 2, 4, 6]:
            raise ValueError(f"{path}: item {raw['key']!r} needs anchors for exactly 0, 2, 4 and 6")
        items.append(CTRSItem(raw["key"], raw["name"], raw["focus"], anchors))
    scales = {
        name: CTRSScale(name, int(s["min"]), int(s["max"]), {int(k): v for k, v in s["anchor_labels"].items()}, dict(s.get("words") or {}))
        for name, s in data["scale"].items()
    }
    return tuple(items), scales


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _norm_words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def trim_edges(transcript: Transcript) -> Transcript:
    """A copy without the patient's first and the therapist's last message (Tahir 2024)."""
    t = transcript.copy()
    first_patient = next((i for i, turn in enumerate(t.turns) if turn.speaker == "patient"), None)
    last_therapist = next((i for i in range(len(t.turns) - 1, -1, -1) if t.turns[i].speaker == "therapist"), None)
    t.turns = [turn for i, turn in enumerate(t.turns) if i not in (first_patient, last_therapist)]
    return t


@dataclass
class ItemRating:
    """The judge's rating of one item."""

    score: float
    quote: str = ""
    justification: str = ""


class CTRSJudge(LLMJudge[dict[str, ItemRating]]):
    """Rates the therapist on the CTRS; one backend call per attempt for a whole batch.

    Args:
        backend: The judge model.
        variant: ``"standard"`` (0-6 numbers) or ``"tahir"`` (word ratings mapped to 1-10).
        not_applicable_below_rounds: ``{item_key: n}``: the item is ``None`` (not applicable)
            when the session has fewer than ``n`` therapist turns. Default: homework 8 and
            pacing 6 (standard), none (tahir, which rated every item).
        aggregate: ``"mean"`` or ``"sum"`` of applicable items (default mean; tahir: sum).
        trim: Drop the patient's first and therapist's last message before rating
            (default: False; tahir: True). See the module docstring.
        items: Item keys to rate (default all 11).
        **kwargs: :class:`~rewards.llm_judge.LLMJudge` options (sampling, max_attempts, cache,
            failure_policy (default "none"; tahir: "lowest"), use_json_schema).
    """

    name = "ctrs"
    default_max_new_tokens = 1024

    def __init__(
        self,
        backend: Backend,
        *,
        variant: Variant = "standard",
        not_applicable_below_rounds: Mapping[str, int] | None = None,
        aggregate: Aggregate | None = None,
        trim: bool | None = None,
        items: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"CTRSJudge variant must be one of {VARIANTS} (got {variant!r})")
        tahir = variant == "tahir"
        kwargs.setdefault("failure_policy", "lowest" if tahir else "none")
        super().__init__(backend, **kwargs)
        all_items, scales = load_ctrs()
        self.variant = variant
        self.scale = scales[variant]
        known = {it.key: it for it in all_items}
        if items is not None:
            unknown = [k for k in items if k not in known]
            if unknown:
                raise ValueError(f"unknown CTRS item(s) {unknown}; choose from {list(known)}")
        self.items = [known[k] for k in items] if items is not None else list(all_items)
        # Replies may key items by our key or by the scale's title ("Guided Discovery").
        self._alias_map = {**{_norm(it.name): it.key for it in self.items}, **{_norm(it.key): it.key for it in self.items}}
        nab = dict(DEFAULT_NOT_APPLICABLE_BELOW_ROUNDS if not tahir else {}) if not_applicable_below_rounds is None else dict(not_applicable_below_rounds)
        bad = [k for k in nab if k not in known]
        if bad:
            raise ValueError(f"not_applicable_below_rounds names unknown item(s) {bad}; choose from {list(known)}")
        self.not_applicable_below_rounds = nab
        self.aggregate = aggregate or ("sum" if tahir else "mean")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES} (got {self.aggregate!r})")
        self.trim = tahir if trim is None else trim
        self.template = PROMPT_DIR / ("ctrs_tahir.txt" if tahir else "ctrs.txt")
        if tahir:
            self.name = "ctrs_tahir"

    # -- which items apply -----------------------------------------------------------------

    @staticmethod
    def rounds(transcript: Transcript) -> int:
        """Therapist turns in the session (one round = one therapist turn and the reply)."""
        return len(transcript.therapist_turns)

    def applicable(self, transcript: Transcript) -> list[CTRSItem]:
        r = self.rounds(transcript)
        return [it for it in self.items if r >= self.not_applicable_below_rounds.get(it.key, 0)]

    def context_meta(self, transcript: Transcript) -> dict[str, Any]:
        app = self.applicable(transcript)
        lo, hi = self.scale.min, self.scale.max
        n = len(app)
        return {
            "variant": self.variant,
            "aggregate": self.aggregate,
            "n_items": n,
            "not_applicable": [it.key for it in self.items if it not in app],
            "rounds": self.rounds(transcript),
            "scale": [lo, hi],
            "total_range": [lo * n, hi * n] if self.aggregate == "sum" else [lo, hi],
        }

    # -- prompt ---------------------------------------------------------------------------

    def judged_transcript(self, transcript: Transcript) -> Transcript:
        return trim_edges(transcript) if self.trim else transcript

    def _items_text(self, items: Sequence[CTRSItem]) -> str:
        blocks = []
        for it in items:
            lines = [f'"{it.key}" ({it.name}): {it.focus}']
            lines += [f"  {self.scale.anchor_labels[k]}: {it.anchors[k]}" for k in (0, 2, 4, 6)]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def _example(self, items: Sequence[CTRSItem]) -> str:
        score = "<one rating word>" if self.scale.words else f"<whole number {self.scale.min}-{self.scale.max}>"
        return json.dumps(
            {it.key: {"quote": "<exact words from the transcript>", "justification": "<one sentence>", "score": score} for it in items},
            indent=1,
        )

    def build_prompt(self, transcript: Transcript, profile: PatientProfile | None) -> list[dict[str, str]]:
        items = self.applicable(transcript)
        text = render_prompt(
            self.template,
            transcript=fence(self.judged_transcript(transcript).render() or "(empty session)"),
            items=self._items_text(items),
            example=self._example(items),
            words=", ".join(f'"{w}"' for w in self.scale.words),
        )
        return [{"role": "user", "content": text}]

    def json_schema(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None]) -> dict[str, Any]:
        # One schema per generate() call: every item some transcript needs is allowed, and the
        # items every transcript needs are required (exact when the batch has one session length).
        per = [{it.key for it in self.applicable(t)} for t in transcripts] or [set()]
        union, common = set().union(*per), set.intersection(*per)
        score = {"type": "string", "enum": list(self.scale.words)} if self.scale.words else {
            "type": "integer", "minimum": self.scale.min, "maximum": self.scale.max}
        item = {
            "type": "object",
            "properties": {"quote": text_field(120), "justification": text_field(160), "score": score},
            "required": ["quote", "justification", "score"],
        }
        keys = [it.key for it in self.items if it.key in union]
        return {
            "type": "object",
            "properties": {k: item for k in keys},
            "required": [k for k in keys if k in common],
            "additionalProperties": False,
        }

    # -- parse ----------------------------------------------------------------------------

    def parse(self, text: str, transcript: Transcript, profile: PatientProfile | None) -> dict[str, ItemRating] | None:
        obj = extract_json(text)
        if obj is None:
            return None
        for wrapper in ("items", "ratings", "scores", "ctrs"):  # some models nest the answer
            if isinstance(obj.get(wrapper), Mapping) and not any(_norm(k) in self._aliases() for k in obj):
                obj = obj[wrapper]
        found = {}
        for k, v in obj.items():
            key = self._aliases().get(_norm(str(k)))
            if key is not None:
                found[key] = v
        out: dict[str, ItemRating] = {}
        for it in self.applicable(transcript):
            if it.key not in found:
                raise ValueError(f"item {it.key!r} missing from the reply")
            entry = found[it.key]
            if isinstance(entry, Mapping):
                if "score" not in entry:
                    raise ValueError(f"item {it.key!r} has no 'score'")
                rating = ItemRating(
                    self.scale.parse_score(entry["score"]),
                    str(entry.get("quote") or ""),
                    str(entry.get("justification") or ""),
                )
            else:  # a bare score: accepted, but with nothing to cite
                rating = ItemRating(self.scale.parse_score(entry))
            out[it.key] = rating
        return out

    def _aliases(self) -> dict[str, str]:
        return self._alias_map

    # -- results --------------------------------------------------------------------------

    def _total(self, values: list[float]) -> float | None:
        if not values:
            return None
        return float(sum(values)) if self.aggregate == "sum" else float(sum(values) / len(values))

    def to_result(self, value: dict[str, ItemRating], transcript: Transcript, profile: PatientProfile | None) -> JudgeResult:
        app = {it.key for it in self.applicable(transcript)}
        scores = {it.key: (value[it.key].score if it.key in app else None) for it in self.items}
        said = _norm_words(self.judged_transcript(transcript).render())
        quotes = [r.quote for r in value.values() if r.quote.strip()]
        verified = sum(1 for q in quotes if _norm_words(q) and _norm_words(q) in said)
        lines = []
        for it in self.items:
            if it.key not in app:
                lines.append(f"{it.key}: not applicable ({self.rounds(transcript)} rounds)")
                continue
            r = value[it.key]
            quote = f' [quote: "{r.quote}"]' if r.quote.strip() else ""
            lines.append(f"{it.key} ({r.score:g}): {r.justification}{quote}")
        return JudgeResult(
            total=self._total([s for s in scores.values() if s is not None]),
            scores=scores,
            rationale="\n".join(lines),
            meta={
                "quotes_given": len(quotes),
                "quotes_verified": verified,
                "justifications": {k: value[k].justification for k in value},
                "quotes": {k: value[k].quote for k in value},
            },
        )

    def lowest_scores(self, transcript: Transcript, profile: PatientProfile | None) -> tuple[float | None, dict[str, float | None]]:
        app = {it.key for it in self.applicable(transcript)}
        scores = {it.key: (float(self.scale.min) if it.key in app else None) for it in self.items}
        return self._total([s for s in scores.values() if s is not None]), scores

    def failure_scores(self, transcript: Transcript, profile: PatientProfile | None) -> dict[str, float | None]:
        return {it.key: None for it in self.items}

    def finish(self, attempted, transcript, profile) -> JudgeResult:
        result = super().finish(attempted, transcript, profile)
        result.meta.update(self.context_meta(transcript))
        return result

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None = None) -> list[JudgeResult]:
        """Rate a batch; sessions with no applicable item get total ``None`` without a model call."""
        transcripts = list(transcripts)
        profiles = align_profiles(transcripts, profiles, who="CTRSJudge")
        rated = [i for i, t in enumerate(transcripts) if self.applicable(t)]
        results: list[JudgeResult | None] = [None] * len(transcripts)
        if rated:
            for i, r in zip(rated, super().score([transcripts[i] for i in rated], [profiles[i] for i in rated])):
                results[i] = r
        for i, t in enumerate(transcripts):
            if results[i] is None:
                results[i] = JudgeResult(
                    total=None,
                    scores={it.key: None for it in self.items},
                    rationale=f"no CTRS item applies to a session of {self.rounds(t)} rounds",
                    meta={"judge": self.name, **self.context_meta(t)},
                )
        return results  # type: ignore[return-value]
