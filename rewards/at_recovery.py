"""Automatic-thought (AT) recovery: did the session bring the patient's automatic thought to light?

Two judges, both scored against the profile's ground truth (``PatientProfile.automatic_thoughts``):

* :class:`EmbeddingATJudge` needs no LLM. The patient's own utterances are the "estimate": its
  ``similarity`` is the best MiniLM cosine between any patient utterance (or sentence of one) and
  any ground-truth thought, and the per-turn disclosure finder gives ``first_disclosure_turn``.
  This is what the embedded rubric uses.
* :class:`LLMATJudge` does what LLM4CBT did: an LLM reads the dialogue and states the automatic
  thought(s) with quotes of the patient as evidence (``prompts/at_estimate.txt``); a second LLM
  call per batch gives a match verdict against the ground truth (``prompts/at_match.txt``, JSON
  ``{"match": bool, "rationale": str}``); the embedding similarity between the estimate and the
  ground truth is added as a deterministic check. Only estimated thoughts whose evidence quotes
  the patient's own words count (:func:`supported_by_patient`): a forged quote or an invented
  thought is not recovered, and an estimate with none left scores 0.0 without a match call.

Scores in every :class:`~rewards.types.JudgeResult`: ``similarity``, ``match`` (``None`` for the
embedding judge), ``first_disclosure_turn`` (index into ``transcript.turns``; ``None`` when never
disclosed) and ``disclosed`` (1.0/0.0).

Disclosure threshold (:data:`DISCLOSURE_THRESHOLD` = 0.43), calibrated on the handwritten cases in
``prompts/at_disclosure_calibration.yaml`` (6 thoughts; 18 disclosing utterances, 30 same-topic
non-disclosing ones, 90 disclosing utterances of *other* cases). Best-unit cosine with
all-MiniLM-L6-v2: disclosing 0.35-0.75 (mean 0.53), same-topic non-disclosing 0.04-0.77 (mean
0.25), other cases' disclosures at most 0.36. Every threshold in (0.422, 0.434] gives the best
trade-off on this set: 15/18 disclosures found, 2/120 false alarms. The separation is imperfect and
the errors are instructive: "I check the stove maybe ten times" scores 0.77 against "If I don't
check the stove, the house will burn down" (word overlap, no thought), while "Whatever I try, it
always fails in the end" scores only 0.35 against "Nothing I do ever works out". Treat
``disclosed`` as a cheap, noisy signal; the LLM match verdict is the stronger one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from cbtgym.backends.base import Backend
from cbtgym.embeddings import normalize_rows
from cbtgym.profiles.schema import PatientProfile
from cbtgym.transcript import Transcript

from cbtgym.llm import Attempted, extract_json, fence, render_prompt, text_field

from .llm_judge import PROMPT_DIR, LLMJudge, align_profiles
from .types import JudgeResult

EmbedFn = Callable[[Sequence[str]], np.ndarray]

#: Cosine (all-MiniLM-L6-v2) above which a patient utterance counts as disclosing a thought; see module docstring.
DISCLOSURE_THRESHOLD = 0.43
CALIBRATION_FILE = "at_disclosure_calibration.yaml"

ESTIMATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "automatic_thoughts": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"thought": text_field(120), "evidence": text_field(120)},
                "required": ["thought", "evidence"],
            },
        }
    },
    "required": ["automatic_thoughts"],
}
MATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"rationale": text_field(), "match": {"type": "boolean"}},
    "required": ["rationale", "match"],
}


def default_embed(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings via :mod:`cbtgym.embeddings` (loaded on first use)."""
    from cbtgym.embeddings import embed

    return embed(list(texts))


def utterance_units(text: str) -> list[str]:
    """The utterance and, when it has several, each of its sentences.

    A thought said in one sentence of a long turn is diluted in the turn's embedding; the best
    sentence catches it.
    """
    text = text.strip()
    if not text:
        return []
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    return [text] + sentences if len(sentences) > 1 else [text]


def embed_unique(texts: Sequence[str], embed: EmbedFn) -> dict[str, np.ndarray]:
    """One ``embed`` call for all distinct texts; rows re-normalised so dot products are cosines."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return {}
    vecs = normalize_rows(embed(unique))  # a custom embed need not normalise
    if vecs.shape[0] != len(unique):
        raise ValueError(f"embed returned {vecs.shape[0]} vectors for {len(unique)} texts")
    return dict(zip(unique, vecs))


def best_similarity(a: Sequence[str], b: Sequence[str], vectors: dict[str, np.ndarray]) -> float | None:
    """The highest cosine over all ``a x b`` pairs (``None`` when either side is empty)."""
    if not a or not b:
        return None
    return float((np.stack([vectors[x] for x in a]) @ np.stack([vectors[y] for y in b]).T).max())


@dataclass
class DisclosureTrace:
    """How close each patient turn came to the ground-truth thought(s).

    Attributes:
        per_turn: ``{turn index: best cosine}`` for every patient turn.
        threshold: The threshold used.
        first_turn: Index (into ``transcript.turns``) of the first patient turn at or above the
            threshold, or ``None``.
        best_turn: Index of the patient turn with the highest cosine, or ``None`` without patient turns.
        best: That highest cosine, or ``None``.
    """

    per_turn: dict[int, float] = field(default_factory=dict)
    threshold: float = DISCLOSURE_THRESHOLD
    first_turn: int | None = None
    best_turn: int | None = None
    best: float | None = None

    @property
    def disclosed(self) -> bool:
        return self.first_turn is not None


def disclosure_traces(
    transcripts: Sequence[Transcript],
    thoughts: Sequence[Sequence[str]],
    embed: EmbedFn | None = None,
    threshold: float = DISCLOSURE_THRESHOLD,
) -> list[DisclosureTrace]:
    """Per-turn disclosure of the ground-truth thoughts, for a batch (one ``embed`` call in all).

    Args:
        transcripts: The sessions.
        thoughts: Ground-truth automatic thoughts, one list per session.
        embed: ``texts -> (n, d)`` embeddings; default :func:`default_embed` (MiniLM).
        threshold: Cosine at or above which a patient turn discloses a thought.
    """
    embed = embed or default_embed
    units = {
        (k, i): utterance_units(t.text)
        for k, tr in enumerate(transcripts)
        for i, t in enumerate(tr.turns)
        if t.speaker == "patient"
    }
    vectors = embed_unique([u for us in units.values() for u in us] + [g for gs in thoughts for g in gs], embed)
    traces = []
    for k, tr in enumerate(transcripts):
        trace = DisclosureTrace(threshold=threshold)
        for i, turn in enumerate(tr.turns):
            sim = best_similarity(units.get((k, i), []), thoughts[k], vectors)
            if sim is None:
                continue
            trace.per_turn[i] = sim
            if trace.first_turn is None and sim >= threshold:
                trace.first_turn = i
            if trace.best is None or sim > trace.best:
                trace.best, trace.best_turn = sim, i
        traces.append(trace)
    return traces


def first_disclosure_turn(
    transcript: Transcript, thoughts: Sequence[str], embed: EmbedFn | None = None, threshold: float = DISCLOSURE_THRESHOLD
) -> int | None:
    """Index (into ``transcript.turns``) of the first patient turn that discloses one of ``thoughts``, or ``None``."""
    return disclosure_traces([transcript], [list(thoughts)], embed, threshold)[0].first_turn


def _disclosure_scores(trace: DisclosureTrace) -> dict[str, float | None]:
    return {
        "first_disclosure_turn": float(trace.first_turn) if trace.first_turn is not None else None,
        "disclosed": float(trace.disclosed) if trace.per_turn else None,
    }


def _disclosure_meta(trace: DisclosureTrace, transcript: Transcript) -> dict[str, Any]:
    first = trace.first_turn
    return {
        "threshold": trace.threshold,
        "turn_similarity": {str(i): round(s, 4) for i, s in trace.per_turn.items()},
        "best_turn": trace.best_turn,
        # rounds = therapist turns before the disclosure: comparable across sessions of any opening
        "first_disclosure_round": None if first is None else sum(t.speaker == "therapist" for t in transcript.turns[:first]),
    }


class EmbeddingATJudge:
    """AT recovery without an LLM: how close did the patient's own words come to the ground truth?

    ``total`` = ``similarity`` = the best cosine between any patient utterance (or sentence) and any
    ground-truth thought; a session without patient turns gets ``None`` (nothing to score, not a
    failure). Deterministic: no sampling, no parsing.

    Args:
        embed: ``texts -> (n, d)`` embeddings (default MiniLM via :mod:`cbtgym.embeddings`).
        threshold: Disclosure threshold (see module docstring for its calibration).
    """

    name = "at_embedding"

    def __init__(self, embed: EmbedFn | None = None, threshold: float = DISCLOSURE_THRESHOLD) -> None:
        self.embed = embed or default_embed
        self.threshold = threshold

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None = None) -> list[JudgeResult]:
        """Score a batch (one embedding call); ``profiles`` are required (they hold the ground truth)."""
        transcripts = list(transcripts)
        profiles = align_profiles(transcripts, profiles, required=True, who="EmbeddingATJudge")
        traces = disclosure_traces(transcripts, [list(p.automatic_thoughts) for p in profiles], self.embed, self.threshold)  # type: ignore[union-attr]
        results = []
        for tr, trace in zip(transcripts, traces):
            scores = {"similarity": trace.best, "match": None, **_disclosure_scores(trace)}
            if trace.best is None:
                rationale = "no patient turns to compare with the ground-truth thought"
            else:
                said = tr.turns[trace.best_turn].text  # type: ignore[index]
                verdict = f"disclosed at turn {trace.first_turn}" if trace.disclosed else "not disclosed"
                rationale = f"closest patient turn {trace.best_turn} (cosine {trace.best:.2f}): {said!r}; {verdict}"
            results.append(
                JudgeResult(
                    total=trace.best,
                    scores=scores,
                    rationale=rationale,
                    meta={"judge": self.name, **_disclosure_meta(trace, tr)},
                )
            )
        return results


@dataclass
class ATEstimate:
    """An LLM's statement of the patient's automatic thought(s), with the patient's words as evidence."""

    thoughts: list[str]
    evidence: list[str]


def parse_estimate(text: str) -> ATEstimate | None:
    """``{"automatic_thoughts": [{"thought", "evidence"}]}`` (tolerating a few common variants)."""
    obj = extract_json(text)
    if obj is None:
        return None
    items = obj.get("automatic_thoughts", obj.get("thoughts", obj.get("automatic_thought", obj.get("thought"))))
    if isinstance(items, (str, dict)):
        items = [items]
    if not isinstance(items, list):
        return None
    thoughts, evidence = [], []
    for it in items:
        if isinstance(it, str):
            thought, ev = it, ""
        elif isinstance(it, dict):
            thought, ev = it.get("thought") or it.get("automatic_thought") or "", it.get("evidence") or it.get("quote") or ""
            if not isinstance(thought, str) or not isinstance(ev, (str, list)):
                continue
            ev = " ".join(ev) if isinstance(ev, list) else ev
        else:
            continue
        if thought.strip():
            thoughts.append(thought.strip())
            evidence.append(str(ev).strip())
    return ATEstimate(thoughts, evidence) if thoughts else None


def parse_match(text: str) -> dict[str, Any] | None:
    """``{"match": bool, "rationale": str}``; "yes"/"no" and "true"/"false" strings are accepted."""
    obj = extract_json(text)
    if obj is None or "match" not in obj:
        return None
    m = obj["match"]
    if isinstance(m, str):
        m = {"true": True, "yes": True, "false": False, "no": False}.get(m.strip().lower())
    if not isinstance(m, bool):
        return None
    return {"match": m, "rationale": str(obj.get("rationale") or "")}


def _norm_words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def supported_by_patient(estimate: ATEstimate, transcript: Transcript) -> list[bool]:
    """For each estimated thought: is its evidence a quote of the patient's own words?

    The check is on normalised words (case, punctuation and spacing ignored). A thought with no
    evidence, or with evidence the patient never said (a forged quote, a thought the judge
    invented or one a therapist turn injected), is unsupported.
    """
    said = _norm_words(" ".join(t.text for t in transcript.patient_turns))
    return [bool(_norm_words(e)) and _norm_words(e) in said for e in estimate.evidence]


def _supported_only(estimate: ATEstimate, transcript: Transcript) -> ATEstimate:
    keep = supported_by_patient(estimate, transcript)
    return ATEstimate([t for t, k in zip(estimate.thoughts, keep) if k], [e for e, k in zip(estimate.evidence, keep) if k])


class LLMATJudge(LLMJudge[ATEstimate]):
    """LLM4CBT-style AT recovery: estimate the thought from the dialogue, then judge the match.

    Two batched stages, each one backend call per attempt for the whole batch: the estimate
    (``at_estimate.txt``) for every session, then the match verdict (``at_match.txt``) for every
    session whose estimate parsed and quotes the patient (see :func:`supported_by_patient`;
    unsupported thoughts are dropped, and none left means 0.0). ``total`` is the verdict (1.0 match, 0.0 no match); a failed
    stage gives a flagged failure under the judge's ``failure_policy`` (``"lowest"`` means 0.0).
    The embedding similarity (estimate vs ground truth) and the disclosure scores are computed
    with MiniLM whatever the LLM did.

    Args:
        backend: The judge model.
        embed: Embedding function (default MiniLM).
        threshold: Disclosure threshold for the per-turn finder.
        match_max_new_tokens: Token budget of the match verdict.
        **kwargs: :class:`~rewards.llm_judge.LLMJudge` options.
    """

    name = "at_recovery"
    default_max_new_tokens = 256

    def __init__(
        self,
        backend: Backend,
        *,
        embed: EmbedFn | None = None,
        threshold: float = DISCLOSURE_THRESHOLD,
        match_max_new_tokens: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(backend, **kwargs)
        self.embed = embed or default_embed
        self.threshold = threshold
        self.match_max_new_tokens = match_max_new_tokens

    def build_prompt(self, transcript: Transcript, profile: PatientProfile | None) -> list[dict[str, str]]:
        return [{"role": "user", "content": render_prompt(PROMPT_DIR / "at_estimate.txt", transcript=fence(transcript.render() or "(empty session)"))}]

    def parse(self, text: str, transcript: Transcript, profile: PatientProfile | None) -> ATEstimate | None:
        return parse_estimate(text)

    def json_schema(self, transcripts, profiles) -> dict[str, Any]:
        return ESTIMATE_SCHEMA

    def match_prompt(self, estimate: ATEstimate, profile: PatientProfile) -> list[dict[str, str]]:
        gt = "\n".join(f"- {t}" for t in profile.automatic_thoughts)
        est = fence("\n".join(f"- {t}" for t in estimate.thoughts), tag="estimate")
        return [{"role": "user", "content": render_prompt(PROMPT_DIR / "at_match.txt", ground_truth=gt, estimate=est)}]

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None = None) -> list[JudgeResult]:
        """Estimate, match and measure a batch; ``profiles`` are required (they hold the ground truth)."""
        transcripts = list(transcripts)
        profiles = align_profiles(transcripts, profiles, required=True, who="LLMATJudge")
        estimates = self.run(transcripts, profiles)
        # Only thoughts whose evidence the patient actually said can count as recovered, so only
        # they go to the match verdict and the similarity.
        supported = {i: _supported_only(a.value, transcripts[i]) for i, a in enumerate(estimates) if a.ok}
        ok = [i for i, est in supported.items() if est.thoughts]
        verdicts: dict[int, Attempted[dict[str, Any]]] = {}
        if ok:
            match_sampling = self.sampling.with_(max_new_tokens=self.match_max_new_tokens, json_schema=None)
            prompts = [self.match_prompt(supported[i], profiles[i]) for i in ok]  # type: ignore[arg-type]
            found = self.call(prompts, parse_match, MATCH_SCHEMA, sampling=match_sampling)
            verdicts = dict(zip(ok, found))
        gts = [list(p.automatic_thoughts) for p in profiles]  # type: ignore[union-attr]
        traces = disclosure_traces(transcripts, gts, self.embed, self.threshold)
        est_texts = [t for est in supported.values() for t in est.thoughts]
        vectors = embed_unique(est_texts + [g for gs in gts for g in gs], self.embed) if est_texts else {}
        return [
            self._result(transcripts[i], gts[i], estimates[i], supported.get(i), verdicts.get(i), traces[i], vectors)
            for i in range(len(transcripts))
        ]

    def _result(
        self,
        transcript: Transcript,
        gt: list[str],
        est: Attempted[ATEstimate],
        supported: ATEstimate | None,
        verdict: Attempted[dict[str, Any]] | None,
        trace: DisclosureTrace,
        vectors: dict[str, np.ndarray],
    ) -> JudgeResult:
        meta: dict[str, Any] = {
            "judge": self.name,
            "backend": self.backend.name,
            "attempts": est.attempts,
            "match_attempts": verdict.attempts if verdict else 0,
            "cache_hits": sum(est.cached) + (sum(verdict.cached) if verdict else 0),
            **_disclosure_meta(trace, transcript),
        }
        disclosure = _disclosure_scores(trace)
        if est.ok:
            meta.update(estimated_thoughts=est.value.thoughts, evidence=est.value.evidence,  # type: ignore[union-attr]
                        evidence_verified=len(supported.thoughts))  # type: ignore[union-attr]
        if supported is not None and not supported.thoughts:
            # A parsed estimate whose quotes the patient never said recovered nothing: a real 0, not a failure.
            return JudgeResult(
                total=0.0,
                scores={"similarity": None, "match": 0.0, **disclosure},
                rationale="no estimated thought quotes the patient's words, so none counts as recovered: "
                + "; ".join(f"{t!r} (evidence: {e!r})" for t, e in zip(est.value.thoughts, est.value.evidence)),  # type: ignore[union-attr]
                raw=est.last_raw,
                meta=meta,
            )
        if not est.ok or verdict is None or not verdict.ok:
            stage = "estimate" if not est.ok else "match verdict"
            failed = est if not est.ok else verdict
            result = self.failure_result(failed, transcript, None)  # type: ignore[arg-type]
            result.rationale = f"{self.name}: the {stage} could not be parsed after {failed.attempts} attempt(s)"  # type: ignore[union-attr]
            if self.failure_policy == "lowest":
                result.rationale += "; scored as no match (failure_policy='lowest')"
            similarity = best_similarity(supported.thoughts, gt, vectors) if supported is not None else None
            result.scores = {**result.scores, "similarity": similarity, **disclosure}
            result.meta.update(meta)
            result.meta["failed_stage"] = stage
            return result
        value, v = supported, verdict.value  # type: ignore[union-attr]
        meta["match_rationale"] = v["rationale"]
        match = 1.0 if v["match"] else 0.0
        lines = [f"estimate: {t!r} (evidence: {e!r})" for t, e in zip(value.thoughts, value.evidence)]
        lines.append(f"match: {v['match']} - {v['rationale']}")
        return JudgeResult(
            total=match,
            scores={"similarity": best_similarity(value.thoughts, gt, vectors), "match": match, **disclosure},
            rationale="\n".join(lines),
            raw=est.last_raw + "\n\n--- match verdict ---\n\n" + verdict.last_raw,
            meta=meta,
        )

    def lowest_scores(self, transcript: Transcript, profile: PatientProfile | None) -> tuple[float | None, dict[str, float | None]]:
        return 0.0, {"match": 0.0}

    def failure_scores(self, transcript: Transcript, profile: PatientProfile | None) -> dict[str, float | None]:
        return {"match": None}
