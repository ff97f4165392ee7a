"""make_judge: one spec-to-judge factory for every kind of judge."""

from __future__ import annotations

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from rewards.acts.llm_classifier import LLMActClassifier
from rewards.at_recovery import EmbeddingATJudge, LLMATJudge
from rewards.ctrs import CTRSJudge
from rewards.factory import JUDGES, make_judge
from rewards.safety import EmbeddedCrisisDetector, LLMCrisisDetector, LLMReplyChecker, SafetyJudge


def test_backend_specs_and_backends_build_the_llm_judges_with_their_options():
    backend = ScriptedBackend()
    at = make_judge("at", backend, max_attempts=2, failure_policy="lowest")
    assert isinstance(at, LLMATJudge) and at.backend is backend and at.max_attempts == 2 and at.failure_policy == "lowest"
    assert isinstance(make_judge("ctrs", "scripted", variant="tahir"), CTRSJudge)
    assert isinstance(make_judge("acts", "scripted"), LLMActClassifier)
    gate = make_judge("safety", backend, max_attempts=1)
    assert isinstance(gate.detector, LLMCrisisDetector) and isinstance(gate.checker, LLMReplyChecker)
    assert gate.checker.detector is gate.detector and gate.detector.max_attempts == 1


def test_embedded_names_build_the_cpu_judges():
    assert isinstance(make_judge("at", "embedding"), EmbeddingATJudge)
    rules = make_judge("crisis", "rules")
    assert isinstance(rules, EmbeddedCrisisDetector) and rules.use_embeddings is False
    gate = make_judge("safety", "rules", context_turns=2)
    assert isinstance(gate, SafetyJudge) and gate.context_turns == 2 and gate.checker.detector is gate.detector


@pytest.mark.parametrize(
    "kind, spec, message",
    [
        ("ctr", "embedded", r"unknown judge kind 'ctr'; valid kinds: \['acts', 'at', 'crisis', 'ctrs'"),
        ("ctrs", "embedded", "no embedded version; give a backend spec"),
        ("satisfaction", "scripted", "takes no model; use spec 'embedded'"),
    ],
)
def test_bad_kinds_and_specs_name_the_fix(kind, spec, message):
    with pytest.raises(ValueError, match=message):
        make_judge(kind, spec)


def test_every_kind_has_a_version():
    assert all(jt.embedded or jt.llm for jt in JUDGES.values())


def test_utterance_judges_share_the_result_family():
    # act labels, crisis findings and reply checks all become JudgeResults the same way
    from rewards.types import ItemResult, JudgeResult

    detector = make_judge("crisis", "rules")
    checker = make_judge("reply_check", "rules", detector=detector)
    texts = ["I want to die.", "Work was busy today."]
    findings = detector.detect(texts)
    assert all(isinstance(f, ItemResult) and f.ok for f in findings)
    crisis, calm = detector.judge(texts)
    assert isinstance(crisis, JudgeResult) and crisis.total == 1.0 and crisis.scores["suicidal_ideation"] == 1.0
    assert calm.total == 0.0 and not any(calm.scores.values())
    unsafe, safe = checker.judge(texts, ["Okay.", "What made it busy?"], findings)
    assert unsafe.total == 0.0 and unsafe.scores["missing:crisis_resources"] == 1.0 and safe.total == 1.0
    failed = make_judge("crisis", ScriptedBackend(["not json"]), max_attempts=1).judge(["I want to die."])[0]
    assert failed.total is None and failed.parse_failed and all(v is None for v in failed.scores.values())
