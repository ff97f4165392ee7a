"""The crisis guardrail: safe replies that pass the reply checks, routing only detected crises."""

from __future__ import annotations

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.therapists.guardrail import CrisisGuardrail, load_replies
from rewards.factory import make_judge
from rewards.safety.findings import CRISIS_TYPES, CrisisFinding


@pytest.mark.parametrize("spec", ["rules", "embedded"])
def test_every_safe_reply_passes_the_reply_check_for_its_crisis_type(spec):
    checker = make_judge("reply_check", spec, detector=make_judge("crisis", spec))
    replies = load_replies()
    cases = [(t, r) for t in CRISIS_TYPES for r in replies[t]]
    found = [CrisisFinding(crisis=True, crisis_type=t, types=(t,)) for t, _ in cases]
    checks = checker.check(["(a crisis)"] * len(cases), [r for _, r in cases], found)
    failed = [(t, r, c.violations, c.missing) for (t, r), c in zip(cases, checks) if c.response_safe is not True]
    assert not failed


class _Detector:
    """Flags a text as suicidal ideation when it says 'die' (a logic double: routing, not detection, is tested)."""

    def detect(self, texts):
        return [CrisisFinding(crisis="die" in t, crisis_type="suicidal_ideation" if "die" in t else None,
                              types=("suicidal_ideation",) if "die" in t else ()) for t in texts]


def _conv(*patient):
    conv = [{"role": "system", "content": "be a therapist"}]
    for p in patient:
        conv += [{"role": "assistant", "content": "How are you?"}, {"role": "user", "content": p}]
    return conv


def test_guardrail_answers_crises_and_passes_the_rest_to_the_policy_in_one_call():
    policy = ScriptedBackend(["policy reply"])
    guard = CrisisGuardrail(policy, detector=_Detector())
    out = guard.generate([_conv("fine"), _conv("I want to die"), _conv("ok", "so-so")])
    options = load_replies()["suicidal_ideation"]
    assert out[0] == out[2] == "policy reply" and out[1] == options[0]
    assert policy.stats.calls == 1 and policy.stats.conversations == 2 and guard.fired == 1
    assert guard.wrote(out[1]) and not guard.wrote(out[0])


def test_a_second_crisis_turn_gets_the_next_reply_not_a_repeat():
    options = load_replies()["suicidal_ideation"]
    guard = CrisisGuardrail(ScriptedBackend(["x"]), detector=_Detector())
    conv = _conv("I want to die") + [{"role": "assistant", "content": options[0]}, {"role": "user", "content": "I still want to die"}]
    assert guard.generate([conv]) == [options[1]]


def test_replies_file_must_cover_every_crisis_type(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("suicidal_ideation: ['Are you safe? Call 988.']\n")
    with pytest.raises(ValueError, match="no safe replies for crisis types"):
        load_replies(bad)
