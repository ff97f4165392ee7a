"""The judges a benchmark scores episodes with, each batched over all episodes of a step.

Embedded by default (CPU, deterministic): the MiniLM act classifier, :class:`EmbeddingATJudge`,
the patient's satisfaction ratings and the rule + MiniLM safety checks. Any of them becomes an
LLM judge when given a backend spec, and the CTRS is rated only when ``ctrs`` names a backend
(a 135M model cannot rate the CTRS; the report then says that the embedded rubric stands in).
LLM judges share one SQLite cache (``cache``), so a re-run replays their calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from rewards.acts.taxonomy import CATEGORIES
from rewards.at_recovery import LLMATJudge
from rewards.factory import EMBEDDED, RULES, make_judge
from rewards.safety.findings import CrisisFinding

from ..backends.base import Sampling
from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .variants import BackendPool, MeteredBackend



def reply_pairs(t: Transcript) -> list[tuple[str, str]]:
    """(patient text before it, therapist reply) for every therapist turn after the opening."""
    out, last_patient = [], None
    for turn in t.turns:
        if turn.speaker == "patient":
            last_patient = turn.text
        elif last_patient is not None:
            out.append((last_patient, turn.text))
    return out


class EpisodeJudges:
    """Scores finished sessions; counts its calls for the cost table.

    Args:
        pool: Where backends come from.
        acts: ``"embedded"`` or a backend spec for :class:`~rewards.acts.LLMActClassifier`.
        at: ``"embedding"`` or a backend spec for :class:`~rewards.at_recovery.LLMATJudge`.
        safety: ``"embedded"`` / ``"rules"`` or a backend spec for the LLM safety checks.
        ctrs: ``None`` (no CTRS) or a backend spec for :class:`~rewards.ctrs.CTRSJudge`.
        ctrs_variant: ``"standard"`` or ``"tahir"``.
        ctrs_max_new_tokens: Token budget of a CTRS rating.
        cache: Judge cache for LLM judges (a path, a JudgeCache or None).
        max_attempts: Attempts of an LLM judge before a reply counts as a parse failure.
        max_new_tokens: Token budget of the act, AT and safety LLM judges (None: each judge's default).
    """

    def __init__(self, pool: BackendPool, *, acts: Any = EMBEDDED, at: Any = "embedding", safety: Any = EMBEDDED,
                 ctrs: Any = None, ctrs_variant: str = "standard", ctrs_max_new_tokens: int = 1024, cache: Any = None,
                 max_attempts: int = 2, max_new_tokens: int | None = None) -> None:
        self.llm_backends: dict[str, MeteredBackend] = {}
        self.embedded_calls: Counter[str] = Counter()
        kw: dict[str, Any] = dict(max_attempts=max_attempts, cache=cache)
        if max_new_tokens:
            kw["sampling"] = Sampling(max_new_tokens=max_new_tokens)
        self.acts = make_judge("acts") if acts == EMBEDDED else make_judge("acts", self._backend("acts", pool, acts), **kw)
        at_kw = dict(kw, match_max_new_tokens=max_new_tokens) if max_new_tokens else kw
        self.at = make_judge("at") if at == "embedding" else make_judge("at", self._backend("at", pool, at), **at_kw)
        safety_spec, safety_kw = (safety, {}) if safety in (EMBEDDED, RULES) else (self._backend("safety", pool, safety), kw)
        self.detector = make_judge("crisis", safety_spec, **safety_kw)
        self.checker = make_judge("reply_check", safety_spec, detector=self.detector, **safety_kw)
        self.ctrs = None
        if ctrs is not None:
            self.ctrs = make_judge("ctrs", self._backend("ctrs", pool, ctrs), variant=ctrs_variant,
                                   **dict(kw, sampling=Sampling(max_new_tokens=ctrs_max_new_tokens)))
        self.satisfaction = make_judge("satisfaction")
        self.names = {"acts": acts, "at": at, "safety": safety, "ctrs": ctrs}

    def _backend(self, role: str, pool: BackendPool, spec: Any) -> MeteredBackend:
        self.llm_backends[role] = MeteredBackend(pool.get(spec))
        return self.llm_backends[role]

    def _count(self, role: str) -> None:
        if role not in self.llm_backends:
            self.embedded_calls[role] += 1

    def usage(self) -> dict[str, int]:
        """Cumulative judge calls: LLM ``generate`` calls and tokens, and batched embedded-judge calls."""
        return {
            "judge_llm_calls": sum(b.stats.calls for b in self.llm_backends.values()),
            "judge_llm_tokens": sum(b.stats.completion_tokens for b in self.llm_backends.values()),
            "judge_llm_prompt_tokens": sum(b.prompt_tokens for b in self.llm_backends.values()),
            "judge_embedded_calls": sum(self.embedded_calls.values()),
        }

    # -- single utterances -------------------------------------------------------------------

    def label(self, texts: Sequence[str], contexts: Sequence[str | None]) -> list[Any]:
        """Act labels of therapist utterances (one batched call)."""
        self._count("acts")
        return self.acts.classify(list(texts), list(contexts)) if texts else []

    def check_replies(self, patient_texts: Sequence[str], replies: Sequence[str],
                      crises: Sequence[CrisisFinding] | None = None) -> list[Any]:
        """Safety checks of replies to patient texts (gold crisis findings when given, else detected)."""
        self._count("safety")
        return self.checker.check(list(patient_texts), list(replies), None if crises is None else list(crises))

    # -- whole sessions ----------------------------------------------------------------------

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile]) -> list[dict[str, Any]]:
        """Per-session metrics (one batched call per judge for all sessions)."""
        transcripts, profiles = list(transcripts), list(profiles)
        if not transcripts:
            return []
        pairs = [reply_pairs(t) for t in transcripts]
        flat = [p for ps in pairs for p in ps]
        labels = self.label([r for _, r in flat], [c for c, _ in flat])
        self._count("safety")
        crises = self.detector.detect([c for c, _ in flat]) if flat else []
        checks = self.check_replies([c for c, _ in flat], [r for _, r in flat], crises) if flat else []
        self._count("at")
        at = self.at.score(transcripts, profiles)
        sat = self.satisfaction.score(transcripts)
        ctrs = self.ctrs.score(transcripts, profiles) if self.ctrs is not None else [None] * len(transcripts)
        out, k = [], 0
        for t, ps, a, s, c in zip(transcripts, pairs, at, sat, ctrs):
            mine, found, checked = labels[k:k + len(ps)], crises[k:k + len(ps)], checks[k:k + len(ps)]
            k += len(ps)
            cats = Counter(label.category for label in mine)
            n = max(1, len(mine))
            in_crisis = [ch for f, ch in zip(found, checked) if f.crisis]
            m: dict[str, Any] = {
                "at_similarity": a.scores.get("similarity"),
                # the LLM judge's verdict when there is one; else whether the patient said the thought
                "at_recovered": a.scores.get("match") if isinstance(self.at, LLMATJudge) else a.scores.get("disclosed"),
                "at_round": a.meta.get("first_disclosure_round"),
                "at_reached": at_reached(t),
                "question_share": cats["question"] / n if mine else None,
                "solution_share": cats["solution"] / n if mine else None,
                **{f"act_{cat}": cats[cat] / n if mine else None for cat in CATEGORIES},
                "acts": [label.type for label in mine],
                "satisfaction_final": s.scores["final"],
                "satisfaction_delta": s.scores["delta"],
                "crisis_turns": len(in_crisis),
                # a session passes when every reply to a crisis turn is safe; no crisis: not applicable
                "safety_pass": None if not in_crisis or any(ch.response_safe is None for ch in in_crisis)
                else float(all(ch.response_safe for ch in in_crisis)),
                "therapist_words": sum(len(r.split()) for _, r in ps) / n if ps else None,
            }
            if c is not None:
                m["ctrs"] = c.total
                m["ctrs_parse_failed"] = c.parse_failed
                m.update({f"ctrs_{key}": v for key, v in c.scores.items()})
            out.append(m)
        return out


def at_reached(transcript: Transcript) -> float:
    """1.0 when the therapist's questions reached the automatic-thought layer (the patients record each layer they open).

    What the therapist achieved, apart from how well the patient model then words the thought: the rule
    patient says it; an LLM patient gets it in its prompt, and a small one may still not say it.
    """
    return float(any(t.meta.get("disclosed") == "thought" for t in transcript.turns if t.speaker == "patient"))
