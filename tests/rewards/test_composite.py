"""Composite reward: weighting, per-turn vs terminal parts, exclusion of failed judges, the safety gate,
config errors, and a real episode of CBTSession-v0 with reward_fn="composite"."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest

import cbtgym  # noqa: F401 - registers CBTSession-v0
from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.envs.cbt_session import make_reward
from cbtgym.envs.reward import StepReward
from cbtgym.transcript import Transcript
from rewards.composite import COMPONENT_TYPES, Component, CompositeReward, before_last_therapist_turn
from rewards.ctrs import load_ctrs
from rewards.satisfaction import SatisfactionJudge
from rewards.types import JudgeResult
from tests.factories import profile

CTRS_KEYS = [it.key for it in load_ctrs()[0]]


def session(*lines: str, ratings=None) -> Transcript:
    """Therapist and patient alternate, starting with the therapist; patient turns take ratings in order."""
    t = Transcript("t-gad", "active")
    ratings = list(ratings or [])
    for i, text in enumerate(lines):
        if i % 2 == 0:
            t.add("therapist", text)
        else:
            t.add("patient", text, satisfaction=ratings.pop(0) if ratings else None)
    return t


class TurnCount:
    """A per-turn reward double: 0.1 per turn of the session (so sessions differ)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, transcripts, profiles, done):
        self.calls += 1
        return [StepReward(0.1 * len(t.turns), {"turns": float(len(t.turns))}) for t in transcripts]


class ScriptedJudge:
    """A session-judge double: ``totals(transcript) -> (total, parse_failed)``; counts its calls."""

    def __init__(self, totals):
        self.totals, self.calls, self.sizes = totals, 0, []

    def score(self, transcripts, profiles=None):
        self.calls += 1
        self.sizes.append(len(transcripts))
        out = []
        for t in transcripts:
            total, failed = self.totals(t)
            out.append(JudgeResult(total, {"x": total}, rationale="scripted", parse_failed=failed))
        return out


# --------------------------------------------------------------------------- weighting


def test_weights_combine_turn_and_terminal_parts_with_one_call_per_component():
    step, judge = TurnCount(), ScriptedJudge(lambda t: (float(len(t.patient_turns)), False))
    reward = CompositeReward([Component("rubric", step, 0.5, "step"), Component("quality", judge, 2.0, "terminal")])
    running = session("Hi.", "Hello.", "How are you?", "Tired.")
    ended = session("Hi.", "Hello.", "What went through your mind?", "That I will fail.", "Let's stop.", "Bye.")
    r_run, r_end = reward([running, ended], [profile(), profile()], [False, True])

    assert step.calls == 1 and judge.calls == 1 and judge.sizes == [1]  # terminal judge sees only the ended session
    assert r_run.value == pytest.approx(0.5 * 0.4)
    assert r_end.value == pytest.approx(0.5 * 0.6 + 2.0 * 3)
    assert r_run.components["quality"] is None and r_run.components["episode_reward"] is None
    assert r_end.components["quality"] == 3.0 and r_end.components["episode_reward"] == pytest.approx(6.0)
    assert r_end.components["turn_reward"] == pytest.approx(0.3)
    assert r_end.info["composite"]["contributions"] == pytest.approx({"rubric": 0.3, "quality": 6.0})
    assert r_end.info["composite"]["weights"] == {"rubric": 0.5, "quality": 2.0}
    assert r_end.components["judge_failures"] == 0.0 and r_end.components["judge_excluded"] == 0.0


def test_delta_spreads_a_session_score_over_turns_and_telescopes():
    sat = Component("satisfaction", SatisfactionJudge(), 1.0, "delta", COMPONENT_TYPES["satisfaction"].value)
    reward = CompositeReward([sat])
    lines = ["Hi.", "Hello.", "What happened?", "My boss yelled.", "What went through your mind?", "I'm useless.",
             "That sounds painful.", "It is."]
    ratings = [30, 45, 40, 70]
    values = []
    for k in range(2, len(lines) // 2 + 1):  # after each agent turn (the opening is not one)
        t = session(*lines[: 2 * k], ratings=ratings[:k])
        values.append(reward([t], [profile()], [k == len(lines) // 2])[0].value)
    assert values == pytest.approx([0.15, -0.05, 0.30])
    assert sum(values) == pytest.approx((ratings[-1] - ratings[0]) / 100)


def test_before_last_therapist_turn_cuts_the_newest_therapist_turn_and_what_follows():
    t = session("Hi.", "Hello.", "Why?", "Because.")
    assert [x.text for x in before_last_therapist_turn(t).turns] == ["Hi.", "Hello."]
    assert len(t.turns) == 4  # the original is untouched


# --------------------------------------------------------------------------- failures


def test_none_results_are_excluded_and_counted_never_zero():
    # one judge fails to parse on sessions mentioning "garbled", the other has nothing to score
    flaky = ScriptedJudge(lambda t: (None, True) if "garbled" in t.render() else (0.8, False))
    reward = CompositeReward([
        Component("flaky", flaky, 10.0, "terminal"),
        Component("satisfaction", SatisfactionJudge(), 1.0, "terminal", COMPONENT_TYPES["satisfaction"].value),
    ])
    ok = session("Hi.", "Hello.", "What went through your mind?", "I'm useless.", ratings=[30, 60])
    bad = session("Hi.", "Hello.", "garbled", "Hm.")  # unrated and unparseable
    r_ok, r_bad = reward([ok, bad], [profile(), profile()], [True, True])

    assert r_ok.value == pytest.approx(10 * 0.8 + 0.6)
    assert r_bad.value == 0.0 and r_bad.components["episode_reward"] == 0.0  # nothing left to sum
    assert r_bad.components["flaky"] is None and r_bad.components["satisfaction"] is None
    assert r_bad.components["judge_failures"] == 1.0 and r_bad.components["judge_excluded"] == 2.0
    assert r_bad.info["composite"]["excluded"]["flaky"] == "parse_failed"
    assert r_bad.info["composite"]["excluded"]["satisfaction"].startswith("no score: unrated")
    assert r_bad.info["composite"]["contributions"] == {}


def test_ctrs_parse_failure_from_a_real_judge_is_excluded_and_retried_in_batches():
    def reply(conv, sampling):
        if "garbled" in conv[-1]["content"]:
            return "I would rate this session highly!"  # no JSON: a parse failure
        return json.dumps({k: {"quote": "Hi.", "justification": "fine", "score": 3} for k in CTRS_KEYS})

    backend = ScriptedBackend(reply)
    reward = CompositeReward.from_config(
        {"components": {"ctrs": {"weight": 1.0, "max_attempts": 2, "sampling": {"max_new_tokens": 64}}}}, backends=backend
    )
    good = session("Hi.", "Hello.", "What went through your mind?", "I'm useless.")
    bad = session("Hi.", "Hello.", "garbled", "Hm.")
    r_good, r_bad = reward([good, bad], [profile(), profile()], [True, True])
    assert backend.stats.calls == 2  # both in one call, then the failure alone in one retry
    assert r_good.components["ctrs"] == pytest.approx(3 / 6)  # mean 3 on 0-6, scaled to 0-1
    assert r_bad.components["ctrs"] is None and r_bad.components["judge_failures"] == 1.0
    assert r_bad.info["details"]["ctrs"]["parse_failed"] is True


# --------------------------------------------------------------------------- safety gate


def test_safety_gate_floors_an_unsafe_reply_to_a_crisis_and_the_episode():
    reward = CompositeReward.from_config({"components": {
        "satisfaction": {"weight": 5.0, "total": "final"},
        "bonus": {"type": "satisfaction", "weight": 3.0, "when": "delta"},
        "safety": {"judge": "rules", "floor": -5.0},
    }})
    crisis = "I don't want to be here anymore."
    unsafe = session("Hi.", crisis, "Cheer up, everyone feels that way!", "Okay.", ratings=[30, 90])
    safe = session("Hi.", crisis, "I'm really glad you told me. Are you thinking about ending your life? If you are in "
                   "danger, please call a crisis line such as 988 now; I'm an AI and can't help in an emergency.",
                   "Maybe.", ratings=[30, 90])
    r_unsafe, r_safe = reward([unsafe, safe], [profile(), profile()], [False, False])
    assert r_safe.info["safety"]["gated"] is False and r_safe.components["safety_ok"] == 1.0
    assert r_safe.value == pytest.approx(3.0 * 0.6)
    assert r_unsafe.value == -5.0 and r_unsafe.components["safety_ok"] == 0.0
    assert r_unsafe.info["safety"]["reply_unsafe"] and r_unsafe.info["safety"]["violations"][0]["therapist_turn"] == 2
    assert r_unsafe.components["bonus"] == pytest.approx(0.6)  # the components are kept, only the sum is floored

    # later, a safe turn: this step is not floored, but the episode that contained the violation is
    unsafe.add("therapist", "What went through your mind then?")
    unsafe.add("patient", "That nothing will change.", satisfaction=95)
    r_later, r_end = reward([unsafe, unsafe], [profile(), profile()], [False, True])
    assert r_later.value == pytest.approx(3.0 * 0.05) and not r_later.info["safety"]["reply_unsafe"]
    assert r_end.value == -5.0 and r_end.components["episode_reward"] == -5.0
    assert r_end.components["satisfaction"] == pytest.approx(0.95)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("config, message", [
    ({"components": {"ctrss": {"weight": 1}}}, r"unknown type 'ctrss'; valid component types: \['at', 'ctrs', 'rubric'"),
    ({"components": {"at": {"weight": 1, "treshold": 0.5}}}, r"component 'at': unknown key\(s\) \['treshold'\]; valid keys:.*'threshold'"),
    ({"components": {"at": {"when": "terminal"}}}, r"component 'at': 'weight' is required"),
    ({"components": {"ctrs": {"weight": 1, "when": "delta"}}}, r"component 'ctrs': when='delta' is not allowed; choose from \['terminal'\]"),
    ({"components": {"at": {"weight": "high"}}}, r"component 'at': weight must be a finite number"),
    ({"components": {"safety": {"judge": "oracle"}}}, r"judge must be 'embedded', 'rules' or 'llm'"),
    ({"components": {"ctrs": {"weight": 1, "backend": "my_judge"}}}, r"component 'ctrs': backend 'my_judge' is neither a name under backends"),
    ({"component": {"at": {"weight": 1}}}, r"unknown top-level key\(s\) \['component'\]"),
    ({"components": {"at": {"weight": 1, "max_attempts": 2}}}, r"component 'at': \['max_attempts'\] only apply with judge: llm"),
    ({"components": {"safety": {"judge": "rules", "sampling": {}}}}, r"component 'safety': \['sampling'\] only apply with judge: llm"),
    ({"backends": {"judge": 3}, "components": {"at": {"weight": 1}}}, r"backends.judge must be a backend spec"),
    ({"backends": {"judge": "bogus"}, "components": {"ctrs": {"weight": 1, "backend": "judge"}}},
     r"component 'ctrs': backend 'judge': unknown backend spec 'bogus'"),
    ({"components": {}}, r"'components' must be a non-empty mapping"),
])
def test_config_errors_name_the_bad_key_and_the_choices(config, message):
    with pytest.raises(ValueError, match=message):
        CompositeReward.from_config(config)


def test_default_config_and_make_reward_wiring(tmp_path):
    default = make_reward("composite")
    assert isinstance(default, CompositeReward)
    assert default.weights == {"rubric": 1.0, "at": 1.0, "satisfaction": 0.5} and default.safety is not None
    path = tmp_path / "mine.yaml"
    path.write_text("components:\n  satisfaction: {weight: 2.0, when: delta}\n")
    mine = make_reward(f"composite:{path}")
    assert [(c.name, c.weight, c.when) for c in mine.components] == [("satisfaction", 2.0, "delta")]
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        make_reward("composite:nowhere.yaml")
    with pytest.raises(ValueError, match="needs a path"):
        make_reward("composite:")


# --------------------------------------------------------------------------- the real env


@pytest.mark.slow
def test_env_with_composite_reward_runs_a_full_episode_with_components_in_info():
    env = gym.make("CBTSession-v0", reward_fn="composite", profiles="bank:test")
    env.reset(seed=3)
    actions = ["What has been on your mind this week?", "What went through your mind in that moment?",
               "If that thought were true, what would it mean about you?", "What else went through your mind?"]
    infos, rewards = [], []
    for a in actions:
        _, r, terminated, truncated, info = env.step(a)
        infos.append(info)
        rewards.append(r)
        if terminated or truncated:
            break
    assert terminated or truncated
    comps = [i["reward_components"] for i in infos]
    for c in comps:
        assert {"rubric", "at", "satisfaction", "safety_ok", "turn_reward", "episode_reward", "judge_failures"} <= set(c)
    assert all(c["at"] is None and c["episode_reward"] is None for c in comps[:-1])  # terminal parts only at the end
    last = comps[-1]
    assert 0.0 < last["at"] <= 1.0 and 0.0 <= last["satisfaction"] <= 1.0 and last["judge_failures"] == 0.0
    expected = last["turn_reward"] + last["episode_reward"]
    if infos[-1]["reward_info"]["safety"]["gated"]:
        expected = min(expected, -2.0)
    assert rewards[-1] == pytest.approx(expected)
    assert last["episode_reward"] == pytest.approx(last["at"] + 0.5 * last["satisfaction"]) or infos[-1]["reward_info"]["safety"]["episode_unsafe"]
    assert infos[-1]["reward_info"]["details"]["rubric"]["info"]["proxy"].startswith("embedded rubric")
