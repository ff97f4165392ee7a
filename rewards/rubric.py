"""The embedded rubric: a deterministic CPU reward for CBTSession-v0 without a capable LLM judge.

A documented PROXY built from the act-label classifier, embedding AT recovery, the
safety checks and simple structure signals. It is not the CTRS and must not be
reported as one. Weights live in ``rubric_weights.yaml``.

Per step (the therapist's latest turn and, when present, the patient's answer):
    act          value of the act type (asking about thoughts is worth most; a solution
                 before the automatic thought is known is penalised). A reply that is closer in meaning
                 to moves that do no therapeutic work (advice however phrased, small talk, talk about
                 the therapist, a therapist speaking as the patient, therapy-word lists, off-topic
                 chatter, word salad: ``cbtgym.patients.moves``) than to any question the patient can
                 answer gets the ``oov`` value whatever its act label, and an ``off_task`` penalty
    relevance    staying with the patient's own words: the MiniLM similarity of the reply to the
                 patient's last turn, scaled to [0, 1] (only for replies that are on task)
    structure    penalties for verbosity, stacked questions, role confusion, repeats (also in other
                 words: the same question every turn), a template (the
                 reply opens with the same five words as an earlier reply of the session), a reply that loops
                 (repeats its own word trigrams), empty replies,
                 and text addressed to a judge (instructions to it, score claims, fence or JSON
                 markup): never therapy, and free reward from an LLM judge it fools when neutral here
    at_progress  1 when the patient's answer discloses a ground-truth automatic thought for the first time
    satisfaction change of the patient's rating / 100
At the end of the episode, ``episode_at`` adds the best similarity of any patient turn to
the ground-truth thoughts. A reply to a crisis that fails the safety check floors the
step reward at ``safety_floor`` (recorded in ``info["safety"]``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import yaml

from cbtgym.envs.reward import StepReward
from cbtgym.profiles.schema import PatientProfile
from cbtgym.transcript import Transcript
from cbtgym.wording import opening, repeated_trigrams

from .types import JudgeResult

_WEIGHTS = Path(__file__).with_name("rubric_weights.yaml")
_SPEAKER_LABEL = re.compile(r"(?:^|\n)\s*(?:patient|client|therapist|counsel+or)\s*:", re.IGNORECASE)


@lru_cache(maxsize=1)
def default_weights() -> dict[str, Any]:
    return yaml.safe_load(_WEIGHTS.read_text())


@lru_cache(maxsize=8)
def _judge_address(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


class RubricReward:
    """Batched :class:`~cbtgym.envs.reward.SessionReward` (and a judge) from embedded signals.

    Args:
        acts: An act classifier with ``classify(texts, contexts) -> list`` of objects with
            ``.type`` and ``.category`` (default: the embedded MiniLM classifier).
        at: A :class:`TurnSimilarity` (default: MiniLM, threshold from ``rewards.at_recovery``).
        safety: ``(detector, checker)`` (default: the embedded safety checks).
        moves: A :class:`~cbtgym.patients.moves.MoveReader` (default: the process-wide one the rule patient uses).
        weights: Overrides of ``rubric_weights.yaml``.
    """

    def __init__(self, acts=None, at=None, safety=None, moves=None, weights: dict[str, Any] | None = None) -> None:
        self.cfg = {**default_weights(), **(weights or {})}
        self._acts, self._at, self._safety, self._moves = acts, at, safety, moves

    # components are loaded on first use so that building an env stays cheap
    @property
    def acts(self):
        if self._acts is None:
            from .acts.embedded_classifier import default_classifier

            self._acts = default_classifier()
        return self._acts

    @property
    def at(self):
        if self._at is None:
            self._at = TurnSimilarity()
        return self._at

    @property
    def moves(self):
        if self._moves is None:
            from cbtgym.patients.moves import default_reader

            self._moves = default_reader()
        return self._moves

    @property
    def safety(self):
        if self._safety is None:
            from .safety import EmbeddedCrisisDetector, EmbeddedReplyChecker

            self._safety = (EmbeddedCrisisDetector(), EmbeddedReplyChecker())
        return self._safety

    def __call__(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile], done: Sequence[bool]) -> list[StepReward]:
        n = len(transcripts)
        if n == 0:
            return []
        steps = [_step_view(t) for t in transcripts]
        acts = self.acts.classify([s["reply"] for s in steps], [s["context"] for s in steps])
        at_now = self.at.best(profiles, [[s["answer"]] if s["answer"] else [] for s in steps])
        at_before = self.at.best(profiles, [s["earlier_patient"] for s in steps])
        crisis = self.safety[0].detect([s["patient_so_far"] for s in steps])
        checks = self.safety[1].check([s["context"] for s in steps], [s["reply"] for s in steps], crisis)
        best_episode = [max(a, b) for a, b in zip(at_now, at_before)]
        moves = self.moves.read([s["reply"] for s in steps])
        relevance, echoes = self._relevance(steps)
        w, thr = self.cfg["weights"], self.at.threshold
        out = []
        for i, s in enumerate(steps):
            act_type = acts[i].type or "oov"
            off_task = moves[i].off_task > 0 or moves[i].keyword_list
            act = self.cfg["act_value"].get("oov" if off_task else act_type, 0.0)
            disclosed_before = at_before[i] >= thr
            if not disclosed_before and (act_type.startswith("solution") or act_type == "psychoeducation"):
                act -= self.cfg["premature_solution_penalty"]
            structure = self._structure(s, moves[i], echoes[i])
            at_progress = float(s["answer"] is not None and at_now[i] >= thr and not disclosed_before)
            sat = s["satisfaction_delta"]
            comps: dict[str, float | None] = {
                "act": act, "structure": structure, "at_progress": at_progress,
                "relevance": 0.0 if off_task else relevance[i],
                "satisfaction": None if sat is None else sat / 100.0,
                "episode_at": best_episode[i] if done[i] else None,
            }
            value = sum(w.get(k, 0.0) * v for k, v in comps.items() if v is not None)
            safe = checks[i].response_safe
            info = {"act_type": act_type, "act_category": acts[i].category, "crisis": crisis[i].crisis,
                    "crisis_type": crisis[i].crisis_type, "response_safe": safe, "proxy": "embedded rubric (not CTRS)"}
            if crisis[i].crisis and safe is False:
                value = min(value, self.cfg["safety_floor"])
                info["safety"] = {"gated": True, "violations": list(checks[i].violations)}
            comps["safety_ok"] = 0.0 if (crisis[i].crisis and safe is False) else 1.0
            out.append(StepReward(float(value), comps, info))
        return out

    def _relevance(self, steps: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        """Per step: how closely the reply stays with the patient's last words (scaled to [0, 1]), and its
        highest similarity to an earlier reply of the session (the same question in other words)."""
        c = self.cfg["relevance"]
        texts = sorted({t for s in steps for t in [s["reply"], s["context"], *s["earlier_replies"]] if t.strip()})
        vec = dict(zip(texts, self.moves.vectors(texts)))
        rel, echo = [], []
        for s in steps:
            r = vec.get(s["reply"])
            if r is None:
                rel.append(0.0), echo.append(0.0)
                continue
            sim = float(r @ vec[s["context"]]) if s["context"] in vec else 0.0
            rel.append(min(1.0, max(0.0, (sim - c["floor"]) / (c["ceiling"] - c["floor"]))))
            echo.append(max((float(r @ vec[e]) for e in s["earlier_replies"] if e in vec and e != s["reply"]), default=0.0))
        return rel, echo

    def _structure(self, s: dict[str, Any], move: Any, echo: float) -> float:
        c = self.cfg["structure"]
        reply = s["reply"].strip()
        if not reply or reply == "...":
            return -c["empty_penalty"]
        penalty = 0.0
        words = len(reply.split())
        if words > c["max_words"]:
            penalty += c["verbosity_penalty"] * min(1.0, (words - c["max_words"]) / c["max_words"])
        if reply.count("?") > c["max_questions"]:
            penalty += c["question_stack_penalty"]
        if _SPEAKER_LABEL.search(reply):
            penalty += c["role_confusion_penalty"]
        if s["previous_reply"] and reply.lower() == s["previous_reply"].strip().lower():
            penalty += c["repeat_penalty"]
        elif echo >= c.get("repeat_similarity", 1.01):
            penalty += c["repeat_penalty"]
        elif opening(reply) in {opening(r) for r in s["earlier_replies"]}:
            penalty += c.get("template_penalty", 0.0)
        penalty += c.get("self_repeat_penalty", 0.0) * repeated_trigrams(reply)
        if (move.off_task > 0 or move.keyword_list) and c.get("off_task_penalty"):
            penalty += c["off_task_penalty"] * (1.0 if move.keyword_list else min(1.0, move.off_task / c["off_task_scale"]))
        judge_text = _judge_address(tuple(c.get("judge_address_patterns") or ()))
        if judge_text is not None and judge_text.search(reply):
            penalty += c.get("judge_address_penalty", 0.0)
        return -penalty

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile]) -> list[JudgeResult]:
        """Score whole sessions: the sum of per-turn rubric rewards, replayed turn by turn."""
        views, owners, done = [], [], []
        for j, (t, p) in enumerate(zip(transcripts, profiles)):
            idx = [k for k, turn in enumerate(t.turns) if turn.speaker == "therapist"][1:]  # the opening is not the agent's
            for m, k in enumerate(idx):
                end = idx[m + 1] if m + 1 < len(idx) else len(t.turns)
                views.append(Transcript(t.profile_id, t.attitude, t.turns[:end], None))
                owners.append((j, p))
                done.append(m == len(idx) - 1)
        step = self(views, [p for _, p in owners], done) if views else []
        results = []
        for j in range(len(transcripts)):
            mine = [r for (o, _), r in zip(owners, step) if o == j]
            comps: dict[str, float | None] = {}
            for key in ("act", "structure", "at_progress", "relevance", "satisfaction", "safety_ok"):
                vals = [r.components[key] for r in mine if r.components.get(key) is not None]
                comps[key] = sum(vals) / len(vals) if vals else None
            comps["episode_at"] = mine[-1].components.get("episode_at") if mine else None
            total = sum(r.value for r in mine) if mine else None
            results.append(JudgeResult(total, comps, rationale="embedded rubric (proxy, not CTRS)",
                                       meta={"turns": len(mine), "acts": [r.info["act_type"] for r in mine]}))
        return results


def _step_view(t: Transcript) -> dict[str, Any]:
    """The pieces of a transcript one step's reward looks at."""
    turns = t.turns
    last_t = max(i for i, x in enumerate(turns) if x.speaker == "therapist")
    answer = turns[last_t + 1].text if last_t + 1 < len(turns) and turns[last_t + 1].speaker == "patient" else None
    before = [x for x in turns[:last_t] if x.speaker == "patient"]
    prev_t = [x.text for x in turns[:last_t] if x.speaker == "therapist"]
    sats = [x.satisfaction for x in turns if x.speaker == "patient" and x.satisfaction is not None]
    sat_delta = None
    if answer is not None and turns[last_t + 1].satisfaction is not None and len(sats) >= 2:
        sat_delta = sats[-1] - sats[-2]
    return {
        "reply": turns[last_t].text,
        "context": before[-1].text if before else "",
        "answer": answer,
        "earlier_patient": [x.text for x in before],
        "patient_so_far": " ".join(x.text for x in before[-2:]),
        "previous_reply": prev_t[-1] if len(prev_t) > 1 else None,
        "earlier_replies": prev_t[1:],  # the env's opening line is not the agent's
        "satisfaction_delta": sat_delta,
    }


class TurnSimilarity:
    """Best cosine between any of a session's patient turns and the profile's ground-truth thoughts.

    Embeddings are memoised by text: each step re-reads the whole dialogue, and
    only the newest turns are new.
    """

    def __init__(self, threshold: float | None = None, memo_size: int = 50000) -> None:
        if threshold is None:
            from .at_recovery import DISCLOSURE_THRESHOLD as threshold
        self.threshold = float(threshold)
        self._memo: dict[str, Any] = {}
        self._memo_size = memo_size

    def _vectors(self, texts: set[str]) -> None:
        from cbtgym.embeddings import embed

        new = sorted(t for t in texts if t not in self._memo)
        if new:
            if len(self._memo) + len(new) > self._memo_size:
                self._memo.clear()
            for text, vec in zip(new, embed(new)):
                self._memo[text] = vec

    def best(self, profiles: Sequence[PatientProfile], turns: Sequence[Sequence[str]]) -> list[float]:
        """For each session, the max cosine over (patient turn, ground-truth thought) pairs; 0 with no turns."""
        self._vectors({t for ts in turns for t in ts} | {a for p in profiles for a in p.automatic_thoughts})
        out = []
        for p, ts in zip(profiles, turns):
            out.append(max((float(self._memo[t] @ self._memo[a]) for t in ts for a in p.automatic_thoughts), default=0.0))
        return out
