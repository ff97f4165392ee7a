"""The evaluation blocks of cbtgym.training.heldout: diversity and safety on hand-made records with known values,
the crisis block with a scripted policy (and its resume), and the panel's results.json block."""

from __future__ import annotations

import dataclasses
import json

import pytest
from trl import DPOConfig, ModelConfig

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.benchmark.protocols import load_crisis_probes
from cbtgym.envs.sessions import OPENING
from cbtgym.jsonl import read_jsonl
from cbtgym.resume import ResumeMismatch
from cbtgym.training.arguments import DPO_DEFAULTS, DPOArguments, EvalArguments
from cbtgym.training.config import ConfigError, parse_args
from cbtgym.training.evaluation import compare
from cbtgym.therapists.guardrail import load_replies
from cbtgym.training.heldout import EvalPanel, diversity, evaluate_crisis, paired_delta, policy_replies, safety_ok, words
from rewards.safety.findings import CrisisFinding

SAFE = "I am worried about your safety. If you are in danger, call 988 or your local emergency number now."


def record(replies, components=(), key="k"):
    """An eval record as ``Episode.to_dict()`` writes it: the env's opening, then the policy's replies."""
    turns = [{"speaker": "therapist", "text": OPENING}]
    for r in replies:
        turns += [{"speaker": "patient", "text": "Okay."}, {"speaker": "therapist", "text": r}]
    return {"key": key, "reward": 0.0, "components": list(components), "transcript": {"turns": turns}}


def test_words_lowercase_and_strip_punctuation():
    assert words("I'm HERE, for you!") == ["im", "here", "for", "you"]


def test_diversity_known_values():
    sessions = [
        record(["What went through your mind when that happened?", "What went through your mind when you woke up?",
                "Tell me more."]),
        # the same opening in another session is no repeat; the punctuation and case of "I HEAR you!!" do not matter
        record(["What went through your mind, when it started?", "I hear you.", "I HEAR you!!"]),
    ]
    d = diversity(sessions)
    # bigrams 7 + 8 + 2 + 7 + 2 + 2 = 28, of which 7 + 3 + 2 + 2 + 2 + 0 = 16 are new
    assert d["distinct2"] == pytest.approx(16 / 28)
    # of 6 replies two repeat an earlier opening of their session: "what went..." (2nd) and "i hear you" (6th)
    assert d["repeated_openings"] == pytest.approx(2 / 6)


def test_diversity_excludes_the_opening_and_is_none_without_data():
    assert diversity([record([OPENING])])["repeated_openings"] == 0.0  # the first reply has nothing earlier to repeat
    assert diversity([record([OPENING])])["distinct2"] == 1.0  # the policy's copy counts, the env's opening does not
    assert diversity([]) == {"distinct2": None, "repeated_openings": None}
    assert diversity([record(["Yes.", "Yes."])]) == {"distinct2": None, "repeated_openings": 0.5}


def test_safety_ok_is_the_step_mean_and_none_aware():
    eps = [record(["a", "b", "c", "d"], [{"safety_ok": 1.0}, {"safety_ok": 0.0}, {"safety_ok": None}, {}]),
           record(["a"], [{"safety_ok": 1.0}])]
    assert safety_ok(eps) == pytest.approx(2 / 3)
    assert safety_ok([record(["a"], [{"safety_ok": None}])]) is None
    assert paired_delta([1.0, None, 0.0], [1.0, 1.0, 1.0])["mean"] == pytest.approx(0.5)
    assert paired_delta([None], [1.0]) is None


def scripted_policy(reply: str, seen: list):
    def answer(conv, sampling):
        seen.append(conv)
        return reply

    return ScriptedBackend(answer, name="scripted-policy")


@pytest.mark.parametrize("checker", ["rules", pytest.param("embedded", marks=pytest.mark.slow)])
def test_crisis_block_answers_after_the_opening_and_resumes(tmp_path, checker):
    probes = load_crisis_probes(per_type=1)
    assert len(probes) == 4
    seen: list = []
    path = tmp_path / "crisis_before.jsonl"
    first = evaluate_crisis(scripted_policy("Nice weather today.", seen), "brief", path, max_new_tokens=8,
                            probes=probes[:2], checker=checker, batch_size=1)
    assert [r["key"] for r in first] == [p["id"] for p in probes[:2]] and len(seen) == 2
    assert [m["role"] for m in seen[0]] == ["system", "assistant", "user"]
    assert seen[0][1]["content"] == OPENING and seen[0][2]["content"] == probes[0]["patient"]
    assert all(r["pass"] == 0.0 for r in first), "small talk fails every crisis probe"
    again = evaluate_crisis(scripted_policy("Nice weather today.", seen), "brief", path, max_new_tokens=8,
                            probes=probes, checker=checker)
    assert len(seen) == 4, "the rerun answered only the two probes not yet in the file"
    assert [r["key"] for r in again] == [p["id"] for p in probes] and again[:2] == first
    assert len(list(read_jsonl(path))) == 4
    with pytest.raises(ResumeMismatch, match="max_new_tokens"):
        evaluate_crisis(scripted_policy("x", seen), "brief", path, max_new_tokens=9, probes=probes, checker=checker)


def eval_args(**changes) -> EvalArguments:
    return DPOArguments(**{**dict(eval_limit=1, eval_attitudes="active", crisis_per_type=1, guardrail=False,
                                  heldout_patient="none"), **changes})


def run_panel(tmp_path, args, before_reply, after_reply, detector=None):
    panel = EvalPanel(args, tmp_path, env_kwargs=dict(profiles=args.eval_profiles, max_rounds=2, reward_fn="placeholder"),
                      rounds=2, max_new_tokens=8, batch_size=4, checker="rules", detector=detector)
    panel.run("before", ScriptedBackend([before_reply]))
    panel.run("after", ScriptedBackend([after_reply]))
    return panel, panel.results()


def test_panel_block_keeps_eval_and_adds_diversity_safety_and_a_skipped_heldout(tmp_path):
    panel, block = run_panel(tmp_path, eval_args(), "Nice weather today.", SAFE)
    plain = compare(panel.episodes["before"], panel.episodes["after"])
    assert json.dumps({k: block[k] for k in plain}) == json.dumps(plain), "the eval numbers are compare()'s, unchanged"
    assert "--heldout_patient" in block["heldout"]["skipped"]
    assert block["diversity"]["before"]["repeated_openings"] > 0  # the scripted policy says one line
    assert set(block["diversity"]["after"]) == {"distinct2", "repeated_openings"}
    s = block["safety"]
    assert s["before"]["safety_ok"] is None, "the placeholder reward has no safety verdict"
    assert s["before"]["crisis_pass"] == 0.0 and s["crisis_probes"] == 4
    assert s["delta"]["crisis_pass"]["n"] == 4
    for name in ("eval_before.jsonl", "eval_after.jsonl", "crisis_before.jsonl", "crisis_after.jsonl"):
        assert (tmp_path / name).is_file()
    metrics = EvalPanel.metrics(block)
    assert metrics["eval/before_mean_reward"] == block["before"]["mean_reward"]
    assert "eval/safety/before_crisis_pass" in metrics and "eval/diversity/after_distinct2" in metrics
    lines = EvalPanel.lines(block)
    assert len(lines) == 4 and lines[1].startswith("held-out panel: skipped") and lines[2].startswith("diversity")


class WordDetector:
    """A crisis (suicidal ideation) wherever the patient says ``word``: a logic double for the guardrail's routing."""

    def __init__(self, word: str) -> None:
        self.word = word

    def detect(self, texts):
        return [CrisisFinding(crisis=self.word in t, crisis_type="suicidal_ideation" if self.word in t else None,
                              types=("suicidal_ideation",) if self.word in t else ()) for t in texts]


def test_guardrail_on_reports_the_guarded_policy_and_the_policy_alone(tmp_path):
    # The rule patient's first answer says "struggling": the guardrail replies there in every session.
    panel, block = run_panel(tmp_path, eval_args(guardrail=True, eval_limit=2), "Nice weather today.", "Tell me more.",
                             detector=WordDetector("struggling"))
    assert block["guardrail"] is True and block["episodes"] == 2
    guarded = [r for ep in panel.episodes["after"] for r in policy_replies(ep)]
    alone = [r for ep in panel.unguarded["after"] for r in policy_replies(ep)]
    assert guarded[0] in load_replies()["suicidal_ideation"] and "Tell me more." in alone
    assert not any(r in load_replies()["suicidal_ideation"] for r in alone), "the unguarded block is the policy alone"
    u = block["unguarded"]
    assert u["guardrail_replies"]["before"] == u["guardrail_replies"]["after"] >= 2
    assert {"before", "after", "delta", "diversity", "safety"} <= set(u) and u["episodes"] == 2
    # the probes: the double flags none of them, so guarded and unguarded replies are the policy's
    assert block["safety"]["after"]["crisis_pass"] == u["safety"]["after"]["crisis_pass"]
    for name in ("eval_unguarded_after.jsonl", "crisis_unguarded_after.jsonl"):
        assert (tmp_path / name).is_file()
    metrics = EvalPanel.metrics(block)
    assert metrics["eval/unguarded/after_guardrail_replies"] >= 2 and "eval/unguarded/delta" in metrics
    assert EvalPanel.lines(block)[4].startswith("without the crisis guardrail")


def test_guardrail_with_a_patient_that_never_signals_a_crisis_changes_nothing(tmp_path):
    panel, block = run_panel(tmp_path, eval_args(guardrail=True, crisis_per_type=0), "Nice weather.", "Tell me more.",
                             detector=WordDetector("zebra"))
    assert block["unguarded"]["guardrail_replies"] == {"before": 0, "after": 0}
    assert panel.unguarded["after"] == panel.episodes["after"]
    assert not (tmp_path / "crisis_unguarded_after.jsonl").exists()


@pytest.mark.slow  # the rubric's embedded judges load MiniLM
def test_panel_heldout_on_with_another_reward(tmp_path):
    args = eval_args(heldout_patient="rule", heldout_reward="rubric", heldout_limit=1, crisis_per_type=0)
    _, block = run_panel(tmp_path, args, "Nice weather today.", "What went through your mind when it happened?")
    h = block["heldout"]
    assert h["patient"] == "rule" and h["reward"] == "rubric" and h["episodes"] == 1
    assert {"before", "after", "delta"} <= set(h)
    assert h["before"]["components"].get("safety_ok") is not None, "the rubric reward scores what placeholder did not"
    assert "crisis_per_type" in block["safety"]["crisis_skipped"]
    assert (tmp_path / "eval_heldout_after.jsonl").is_file()
    assert EvalPanel.lines(block)[1].startswith("held-out panel (rule patient, rubric reward)")


@pytest.mark.parametrize("bad, field", [(dict(heldout_patient="bogus"), "heldout_patient"),
                                        (dict(heldout_patient="rule", heldout_reward="rubrik"), "heldout_reward"),
                                        (dict(heldout_limit=-1), "heldout_limit"), (dict(crisis_per_type=-1), "crisis_per_type")])
def test_heldout_arguments_are_checked(bad, field):
    args, training, model = parse_args((DPOArguments, DPOConfig, ModelConfig), [], DPO_DEFAULTS)
    with pytest.raises(ConfigError, match=f"^{field}: "):
        dataclasses.replace(args, **bad).check(training, model)

