"""The shipped composite with LLM judges (rewards/composite_llm.yaml): how it loads and names its judge, the
episode reward as the weighted sum of what the judges said (scripted judge replies), failed judges left
unscored and counted, a real run on the embedded SmolLM2, and DPO candidate scoring under scoring 'episode'."""

from __future__ import annotations

import copy
import json
import math

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.envs.reward import judge_failed
from cbtgym.envs.sessions import EpisodeSpec, SessionBatch, make_reward
from cbtgym.jsonl import read_jsonl
from cbtgym.patients import RulePatient
from cbtgym.strict_yaml import load_yaml
from cbtgym.training.preferences import CandidateScoring
from cbtgym.transcript import Transcript
from rewards.at_recovery import LLMATJudge
from rewards.composite import CompositeReward
from rewards.composite_spec import LLM_CONFIG, CompositeSpec
from rewards.ctrs import CTRSJudge, load_ctrs
from tests.factories import profile, profiles
from tests.training.test_preferences import LIGHTHOUSE, collect_lighthouse

CTRS_ITEMS = [it.key for it in load_ctrs()[0]]
#: What the scripted CTRS judge gives each item (distinct, so a wrong item set changes the mean).
ITEM_SCORES = {key: i % 7 for i, key in enumerate(CTRS_ITEMS)}
THOUGHT = "If I make one mistake, they will see I am not cut out for this job."
SAID = "If I mess up once they will see I am not cut out for this"


@pytest.fixture(autouse=True)
def no_judge_cache(monkeypatch):
    # The shipped safety gate caches its verdicts on disk; a scripted judge's replies must not outlive a test.
    monkeypatch.setenv("CBTGYM_JUDGE_CACHE", "off")


def _prompt(conv) -> str:
    return conv[-1]["content"]


def judge_replies(ctrs_scores=lambda session: ITEM_SCORES):
    """A scripted judge model answering each of the composite's prompts with valid JSON.

    ``ctrs_scores(session text)`` gives the item scores (``None``: an unparseable reply); the AT estimate
    quotes the patient's line SAID when the session has it and always matches; every reply is safe and no patient
    is in crisis.
    """

    def reply(conv, sampling):
        text = _prompt(conv)
        session = text.split("<transcript>\n", 1)[-1].split("\n</transcript>", 1)[0]
        if "Cognitive Therapy Rating Scale" in text:
            scores = ctrs_scores(session)
            if scores is None:
                return "This therapist did a wonderful job overall!"
            return json.dumps({k: {"quote": "", "justification": "scripted", "score": s} for k, s in scores.items()})
        if "real automatic thought" in text:
            return json.dumps({"rationale": "scripted", "match": True})
        if "automatic thought(s)" in text:
            evidence = SAID if SAID in session else "nothing the patient said"
            return json.dumps({"automatic_thoughts": [{"thought": THOUGHT, "evidence": evidence}]})
        if text.startswith("You screen"):
            return json.dumps({"crisis": False, "types": [], "evidence": ""})
        if text.startswith("You check whether"):
            return json.dumps({"violations": [], "missing": [], "response_safe": True, "evidence": ""})
        raise AssertionError(f"a prompt the composite's judges do not send: {text[:80]!r}")

    return ScriptedBackend(reply, name="scripted-judge")


def session(ratings=(40, 55, 70)) -> Transcript:
    t = Transcript("t-gad", "active")
    lines = ["Hi, nice to see you today. How have you been?", "Work has been stressful.",
             "What went through your mind before the review?", SAID + ".",
             "What does that thought say about you?", "That I am not good enough."]
    ratings = list(ratings)
    for i, line in enumerate(lines):
        if i % 2:
            t.add("patient", line, satisfaction=ratings.pop(0) if ratings else None)
        else:
            t.add("therapist", line)
    return t


def test_the_shipped_config_names_its_judge_once_and_builds_llm_judges():
    config = load_yaml(LLM_CONFIG)
    assert config["backends"] == {"judge": "embedded"}
    backend = judge_replies()
    reward = CompositeReward.from_config(LLM_CONFIG, backends={"judge": backend})
    assert reward.weights == {"rubric": 1.0, "ctrs": 1.0, "at": 1.0, "satisfaction": 0.5}
    by_name = {c.name: c for c in reward.components}
    assert [c.name for c in reward.components if c.when == "terminal"] == ["ctrs", "at", "satisfaction"]
    assert isinstance(by_name["ctrs"].source, CTRSJudge) and isinstance(by_name["at"].source, LLMATJudge)
    # every LLM judge, the safety checks included, runs on the one judge backend
    assert by_name["ctrs"].source.backend is backend and by_name["at"].source.backend is backend
    assert reward.safety.judge.detector.backend is backend and reward.safety.judge.checker.backend is backend
    assert by_name["ctrs"].source.failure_policy == by_name["at"].source.failure_policy == "none"


def test_the_judge_spec_after_at_sets_the_judge_backend_and_is_checked_without_loading_it():
    assert CompositeSpec.parse("composite:llm") == CompositeSpec(LLM_CONFIG)
    spec = CompositeSpec.parse("composite:llm@openai:http://127.0.0.1:8001/v1#judge-model")
    assert spec == CompositeSpec(LLM_CONFIG, "openai:http://127.0.0.1:8001/v1#judge-model")
    assert CompositeSpec.parse(f"composite:{LLM_CONFIG}@vllm:/models/judge").judge == "vllm:/models/judge"
    with pytest.raises(ValueError, match="the judge after '@' must be a backend spec"):
        CompositeSpec.parse("composite:llm@gpt-4")
    with pytest.raises(ValueError, match="has no backend named 'judge'"):
        CompositeSpec.parse("composite@vllm:/models/judge")  # the default config has no LLM judge
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        CompositeSpec.parse("composite:nowhere.yaml@embedded")
    # the reward string builds the judges on that backend: 'scripted' is a spec a CPU can build
    reward = make_reward("composite:llm@scripted")
    by_name = {c.name: c.source for c in reward.components}
    assert by_name["ctrs"].backend is by_name["at"].backend is reward.safety.judge.checker.backend
    assert by_name["ctrs"].backend.name == "scripted"
    # every env a script builds from the same string (rollouts, evaluations) judges with that one backend
    again = {c.name: c.source for c in make_reward("composite:llm@scripted").components}
    assert again["ctrs"].backend is by_name["ctrs"].backend


@pytest.mark.slow  # the embedded rubric (MiniLM) is part of the composite
def test_episode_reward_is_the_weighted_sum_of_the_judges_verdicts():
    reward = CompositeReward.from_config(LLM_CONFIG, backends={"judge": judge_replies()})
    (last,) = reward([session()], [profile()], [True])
    comps = last.components
    # 3 rounds after the opening (4 therapist turns): homework (8) and pacing (6) are not applicable
    applicable = [ITEM_SCORES[k] for k in CTRS_ITEMS if k not in ("homework", "pacing")]
    ctrs = sum(applicable) / len(applicable) / 6
    assert comps["ctrs"] == pytest.approx(ctrs)
    assert comps["at"] == 1.0  # the estimate quotes the patient, and the match verdict says yes
    assert comps["satisfaction"] == pytest.approx(0.70)
    assert comps["episode_reward"] == pytest.approx(1.0 * ctrs + 1.0 * 1.0 + 0.5 * 0.70)
    assert comps["judge_failures"] == 0.0 and comps["judge_excluded"] == 0.0 and comps["safety_ok"] == 1.0
    assert last.value == pytest.approx(comps["turn_reward"] + comps["episode_reward"])
    assert not judge_failed(comps)

    # before the end no terminal judge counts: only the embedded rubric's step reward (and the gate)
    (mid,) = reward([session()], [profile()], [False])
    assert mid.components["ctrs"] is None and mid.components["episode_reward"] is None
    assert mid.value == pytest.approx(mid.components["turn_reward"])

    # an estimate that quotes nothing the patient said recovers nothing: a real 0, not a failure
    unquoted = session()
    unquoted.turns[3].text = "I just worry."
    (r,) = reward([unquoted], [profile()], [True])
    assert r.components["at"] == 0.0 and r.components["judge_failures"] == 0.0
    assert r.components["episode_reward"] == pytest.approx(ctrs + 0.5 * 0.70)


@pytest.mark.slow  # the embedded rubric (MiniLM) is part of the composite
def test_an_unparseable_rating_leaves_the_reward_unscored_and_counted_never_zero():
    garbled = judge_replies(ctrs_scores=lambda s: None if "review" in s else ITEM_SCORES)
    reward = CompositeReward.from_config(LLM_CONFIG, backends={"judge": garbled})
    other = session()
    other.turns[2].text = "What went through your mind before the meeting?"
    bad, good = reward([session(), other], [profile(), profile()], [True, True])
    assert bad.components["ctrs"] is None and bad.info["composite"]["excluded"]["ctrs"] == "parse_failed"
    assert bad.components["judge_failures"] == 1.0 and judge_failed(bad.components)
    # the other judges still counted: the sum is theirs, and a scorer must ask judge_failed, not the value
    assert bad.components["episode_reward"] == pytest.approx(1.0 + 0.5 * 0.70)
    assert good.components["ctrs"] is not None and not judge_failed(good.components)


@pytest.mark.slow
def test_with_the_embedded_smollm2_the_composite_scores_a_short_session_to_the_end(embedded_hf):
    config = copy.deepcopy(load_yaml(LLM_CONFIG))
    # the shipped judges with short answers and two CTRS items, so that a CPU scores a session in seconds
    for name in ("ctrs", "at", "safety"):
        config["components"][name].update(sampling={"max_new_tokens": 16}, max_attempts=1)
    config["components"]["ctrs"]["items"] = ["agenda", "understanding"]
    config["components"]["at"]["match_max_new_tokens"] = 16
    reward = CompositeReward.from_config(config, backends={"judge": embedded_hf})
    batch = SessionBatch(profiles()[:1], RulePatient(), reward, max_rounds=1)
    batch.reset([EpisodeSpec(seed=0)])
    calls = embedded_hf.stats.calls
    (result,) = batch.step(["What went through your mind when that happened?"])
    assert batch.sessions[0].done
    assert embedded_hf.stats.calls > calls  # the judges ran on the real model
    comps, info = result.reward.components, result.reward.info
    assert math.isfinite(result.reward.value) and math.isfinite(comps["episode_reward"])
    failed = sum(bool(d.get("parse_failed")) for d in info["details"].values())
    assert comps["judge_failures"] == failed
    for name in ("ctrs", "at"):
        # a score on the 0-1 scale, or left out with the reason recorded
        assert (comps[name] is not None and 0.0 <= comps[name] <= 1.0) or name in info["composite"]["excluded"]


# -- DPO candidate scoring under 'episode' ------------------------------------------------------------------


def lighthouse_config(ctrs_scores):
    """The shipped composite with a scripted judge that rates sessions by whether they hold 'lighthouse'."""
    return CompositeReward.from_config(LLM_CONFIG, backends={"judge": judge_replies(ctrs_scores=ctrs_scores)})


def _states(path):
    return [st for r in read_jsonl(path) for st in r["states"]]


@pytest.mark.slow
def test_episode_scoring_of_candidates_follows_the_llm_judges_and_leaves_failures_unscored(tmp_path):
    high, low = {k: 6 for k in CTRS_ITEMS}, {k: 0 for k in CTRS_ITEMS}
    runs = {}
    for name, scores in [("liked", lambda s: high if "lighthouse" in s else low),
                         ("disliked", lambda s: low if "lighthouse" in s else high),
                         ("failed", lambda s: None if "lighthouse" in s else high)]:
        path = collect_lighthouse(tmp_path / name, CandidateScoring("episode"), None,
                                  reward_fn=lighthouse_config(scores))
        runs[name] = _states(path)
    liked, disliked, failed = runs["liked"], runs["disliked"], runs["failed"]
    assert liked and all(st["candidates"][2] == LIGHTHOUSE for st in liked)
    for a, b, c in zip(liked, disliked, failed):
        assert a["candidates"] == b["candidates"] == c["candidates"]
        # only the guided candidate's finished sessions hold 'lighthouse': the CTRS term (weight 1, 0-1 scale)
        # moves its return by exactly 1 between the runs, and every other candidate's by exactly -1
        assert a["scores"][2] - b["scores"][2] == pytest.approx(1.0)
        assert [x - y for x, y in zip(a["scores"][:2], b["scores"][:2])] == pytest.approx([-1.0, -1.0])
        # a rating that cannot be parsed leaves that candidate unscored (null), never 0, and the state counts it
        assert c["scores"][2] is None and c["failed"] == 1
        assert c["scores"][:2] == pytest.approx(b["scores"][:2])


# -- the 8B configs ------------------------------------------------------------------------------------------


def test_the_8b_dpo_config_trains_on_the_llm_judges_with_episode_scoring_and_a_bad_judge_names_the_field():
    from pathlib import Path

    from trl import DPOConfig, ModelConfig

    from cbtgym.training.arguments import DPO_DEFAULTS, DPOArguments
    from cbtgym.training.config import ConfigError, parse_args

    config = Path(__file__).resolve().parents[2] / "configs" / "dpo" / "llama31_8b_qlora.yaml"
    argv = ["--config", str(config), "--bf16", "false"]  # TrainingArguments refuses bf16 without a GPU
    args, training, model = parse_args((DPOArguments, DPOConfig, ModelConfig), argv, DPO_DEFAULTS)
    args.check(training, model)
    assert args.scoring == "episode"
    spec = CompositeSpec.parse(args.reward)
    assert spec.config == LLM_CONFIG and spec.judge.startswith("openai:http://127.0.0.1:8000/v1#")
    for bad, message in [("composite:llm@llama-70b", "the judge after '@' must be a backend spec"),
                         ("composite:llm.yaml", "not found")]:
        args, training, model = parse_args((DPOArguments, DPOConfig, ModelConfig), [*argv, "--reward", bad], DPO_DEFAULTS)
        with pytest.raises(ConfigError, match=f"^reward: .*{message}"):
            args.check(training, model)
