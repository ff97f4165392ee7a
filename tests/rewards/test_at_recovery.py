"""Automatic-thought recovery: the MiniLM disclosure finder, its calibration, and the two-stage LLM judge."""

from __future__ import annotations

import json

import pytest
import yaml

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.transcript import Transcript
from rewards.at_recovery import (
    CALIBRATION_FILE,
    DISCLOSURE_THRESHOLD,
    EmbeddingATJudge,
    LLMATJudge,
    disclosure_traces,
    first_disclosure_turn,
    parse_estimate,
    parse_match,
    utterance_units,
)
from rewards.llm_judge import PROMPT_DIR
from tests.factories import profile

GT = "If I make one mistake, they will see I am not cut out for this job."


@pytest.fixture(scope="module")
def minilm():
    from cbtgym.embeddings import embed

    return embed


def session(*patient_lines: str) -> Transcript:
    t = Transcript("t-gad", "active")
    for i, line in enumerate(patient_lines):
        t.add("therapist", ["How have things been?", "What went through your mind?", "And then?"][i % 3])
        t.add("patient", line)
    return t


DISCLOSING = session(
    "I have a performance review next week.",
    "I feel tense every evening.",
    "Honestly, I keep thinking one slip-up and they'll realise I can't do this job.",
)
AVOIDING = session("I have a performance review next week.", "I feel tense every evening.", "I'd rather not go into it.")


# --------------------------------------------------------------------------- parsing (logic)


def test_parse_estimate_accepts_the_schema_and_common_variants():
    est = parse_estimate('{"automatic_thoughts": [{"thought": "I will fail.", "evidence": "I can\'t do this"}]}')
    assert est.thoughts == ["I will fail."] and est.evidence == ["I can't do this"]
    assert parse_estimate('{"automatic_thought": "I will fail."}').thoughts == ["I will fail."]
    assert parse_estimate('{"thoughts": ["A", "B"]}').thoughts == ["A", "B"]
    assert parse_estimate('{"automatic_thoughts": []}') is None
    assert parse_estimate("I think the thought is failure.") is None


def test_parse_match_needs_a_boolean_verdict():
    assert parse_match('{"rationale": "same fear", "match": true}') == {"match": True, "rationale": "same fear"}
    assert parse_match("{'match': 'no'}") == {"match": False, "rationale": ""}
    assert parse_match('{"match": "maybe"}') is None and parse_match('{"rationale": "x"}') is None


def test_long_turns_are_also_split_into_sentences():
    assert utterance_units("One. Two? Three!") == ["One. Two? Three!", "One.", "Two?", "Three!"]
    assert utterance_units("Just one.") == ["Just one."] and utterance_units("  ") == []


# --------------------------------------------------------------------------- embedding judge (real MiniLM)


@pytest.mark.slow
def test_stating_the_thought_scores_higher_than_avoiding_it(minilm):
    judge = EmbeddingATJudge(minilm)
    yes, no = judge.score([DISCLOSING, AVOIDING], [profile(), profile()])
    assert yes.scores["similarity"] > no.scores["similarity"] + 0.15
    assert yes.total == yes.scores["similarity"] and yes.scores["match"] is None
    assert yes.scores["disclosed"] == 1.0 and yes.scores["first_disclosure_turn"] == 5.0
    assert yes.meta["first_disclosure_round"] == 3 and yes.meta["best_turn"] == 5
    assert no.scores["disclosed"] == 0.0 and no.scores["first_disclosure_turn"] is None
    assert first_disclosure_turn(DISCLOSING, [GT], minilm) == 5


@pytest.mark.slow
def test_threshold_separates_the_calibration_cases(minilm):
    # The documented calibration: at DISCLOSURE_THRESHOLD, >= 80% of disclosures found, <= 5% false alarms.
    cases = yaml.safe_load((PROMPT_DIR / CALIBRATION_FILE).read_text())["cases"]
    pos = [(c["thought"], u) for c in cases for u in c["disclosing"]]
    neg = [(c["thought"], u) for c in cases for u in c["not_disclosing"]]
    neg += [(c["thought"], u) for c in cases for other in cases if other is not c for u in other["disclosing"]]
    pairs = pos + neg
    traces = disclosure_traces([session(u) for _, u in pairs], [[gt] for gt, _ in pairs], minilm)
    hits = [t.disclosed for t in traces]
    recall = sum(hits[: len(pos)]) / len(pos)
    false_alarms = sum(hits[len(pos):]) / len(neg)
    assert recall >= 0.8 and false_alarms <= 0.05, (recall, false_alarms, DISCLOSURE_THRESHOLD)


@pytest.mark.slow
def test_no_patient_turns_is_unscored_not_zero(minilm):
    t = Transcript("t-gad", "active")
    t.add("therapist", "Hello, what brings you in?")
    [r] = EmbeddingATJudge(minilm).score([t], [profile()])
    assert r.total is None and not r.parse_failed and r.scores["disclosed"] is None


def test_ground_truth_is_required():
    with pytest.raises(ValueError, match="profiles"):
        EmbeddingATJudge(lambda texts: None).score([AVOIDING])


# --------------------------------------------------------------------------- LLM judge (scripted LLM, real MiniLM)


def llm_reply(conv, sampling):
    text = conv[-1]["content"]
    if "real automatic thought" in text:  # the match prompt
        return json.dumps({"rationale": "same fear of exposure", "match": "slip-up" in text})
    if "rather not" in text:
        return "I cannot tell."  # the estimate of AVOIDING never parses
    return json.dumps({"automatic_thoughts": [{"thought": "One slip-up and they'll see I can't do this job.",
                                               "evidence": "one slip-up and they'll realise I can't do this job"}]})


@pytest.mark.slow
@pytest.mark.parametrize("policy, failed_total", [("none", None), ("lowest", 0.0)])
def test_llm_judge_runs_two_batched_stages(minilm, policy, failed_total):
    backend = ScriptedBackend(llm_reply)
    judge = LLMATJudge(backend, embed=minilm, failure_policy=policy, max_attempts=2)
    ok, failed = judge.score([DISCLOSING, AVOIDING], [profile(), profile()])
    # estimate: 1 call for both + 1 retry for AVOIDING; match: 1 call for DISCLOSING
    assert backend.stats.calls == 3
    assert ok.total == 1.0 and ok.scores["match"] == 1.0 and not ok.parse_failed
    assert ok.scores["similarity"] > DISCLOSURE_THRESHOLD and ok.meta["evidence_verified"] == 1
    assert ok.scores["disclosed"] == 1.0
    assert failed.parse_failed and failed.total == failed_total and failed.meta["failed_stage"] == "estimate"
    assert failed.scores["disclosed"] == 0.0  # the deterministic part is still measured


def forging_reply(conv, sampling):
    text = conv[-1]["content"]
    if "real automatic thought" in text:  # the match prompt: the forged thought would match
        return json.dumps({"rationale": "same fear", "match": "slip-up" in text})
    return json.dumps({"automatic_thoughts": [
        # evidence the patient never said (AVOIDING never mentions a slip-up)
        {"thought": "One slip-up and they'll see I can't do this job.", "evidence": "one slip-up and I'm out"},
        # evidence the patient did say, but a thought that is not the ground truth
        {"thought": "Evenings are hard.", "evidence": "I feel TENSE every evening"},
    ]})


@pytest.mark.slow
def test_llm_judge_counts_only_thoughts_the_patient_said(minilm):
    backend = ScriptedBackend(forging_reply)
    [r] = LLMATJudge(backend, embed=minilm, max_attempts=1).score([AVOIDING], [profile()])
    # The forged thought is dropped before the match verdict, so the verdict is on "Evenings are hard." only.
    assert r.total == 0.0 and r.scores["match"] == 0.0 and not r.parse_failed
    assert r.meta["evidence_verified"] == 1 and backend.stats.calls == 2
    assert r.scores["similarity"] < DISCLOSURE_THRESHOLD


@pytest.mark.slow
def test_llm_judge_scores_zero_without_a_match_call_when_no_evidence_is_the_patients(minilm):
    def reply(conv, sampling):
        return json.dumps({"automatic_thoughts": [
            {"thought": "One slip-up and they'll see I can't do this job.", "evidence": "I will be fired"}]})

    backend = ScriptedBackend(reply)
    [r] = LLMATJudge(backend, embed=minilm, max_attempts=1).score([AVOIDING], [profile()])
    assert r.total == 0.0 and r.scores["match"] == 0.0 and r.scores["similarity"] is None and not r.parse_failed
    assert r.meta["evidence_verified"] == 0 and backend.stats.calls == 1  # no match verdict asked for
    assert "quotes the patient" in r.rationale


@pytest.mark.slow
def test_llm_judge_prompts_fence_the_estimate(minilm):
    prompts = []

    def reply(conv, sampling):
        prompts.append(conv[-1]["content"])
        return llm_reply(conv, sampling)

    LLMATJudge(ScriptedBackend(reply), embed=minilm).score([DISCLOSING], [profile()])
    estimate_prompt, match_prompt = prompts
    assert "<transcript>" in estimate_prompt and GT not in estimate_prompt  # the ground truth never leaks into stage 1
    assert "<estimate>" in match_prompt and GT in match_prompt
