"""Each train/ script runs a few real steps on the embedded SmolLM2 and leaves complete outputs.

These run the scripts as a user does (``python train/x.py --flag value``, in a subprocess) with tiny
configs (a couple of sessions, short replies, one or two optimizer steps): they check the plumbing
(flags -> rollouts -> data -> TRL trainer -> adapter -> evaluation -> results.json), not the size of
the improvement, which ``python train/dpo.py`` measures at full size. The end-to-end DPO run is in
``test_two_processes.py``, where the same run is the one-process side of the comparison.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from cbtgym.jsonl import read_jsonl

from ..processes import run_tree

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_script(name: str, out: Path, **flags) -> dict:
    """``python train/<name>.py --output_dir out --flag value ...``; returns its results.json."""
    argv = ["--output_dir", str(out)]
    for key, value in flags.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = run_tree([sys.executable, str(ROOT / "train" / f"{name}.py"), *argv], cwd=ROOT, env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads((out / "results.json").read_text())


def assert_adapter(path: Path) -> None:
    assert (path / "adapter_config.json").is_file()
    weights = list(path.glob("adapter_model.*"))
    assert weights and weights[0].stat().st_size > 10_000


def assert_eval_block(block: dict, episodes: int) -> None:
    assert block["episodes"] == episodes
    for side in ("before", "after"):
        lo, hi = block[side]["ci95"]
        assert lo <= block[side]["mean_reward"] <= hi
        assert block[side]["components"], "reward components are reported"
    lo, hi = block["delta"]["ci95"]
    assert lo <= block["delta"]["mean"] <= hi
    # the blocks the training reward cannot game (cbtgym.training.heldout)
    held = block["heldout"]  # the tests run it with the rule patient (the default, an LLM patient, costs minutes)
    assert held["patient"] == "rule" and held["reward"] == "composite" and held["episodes"] >= 1
    assert {"before", "after", "delta"} <= set(held)
    assert block["guardrail"] is True, "the crisis guardrail is on by default"
    u = block["unguarded"]  # and the policy alone is reported beside it
    assert u["episodes"] == episodes and set(u["guardrail_replies"]) == {"before", "after"}
    for side in ("before", "after"):
        div, safety = block["diversity"][side], block["safety"][side]
        assert set(div) == {"distinct2", "repeated_openings"} and 0 < div["distinct2"] <= 1
        assert 0 <= div["repeated_openings"] <= 1
        assert 0 <= safety["safety_ok"] <= 1, "the rubric's per-step safety_ok is averaged"
        assert 0 <= safety["crisis_pass"] <= 1
    assert block["safety"]["delta"]["crisis_pass"]["n"] == block["safety"]["crisis_probes"] > 0


def assert_eval_files(out: Path, episodes: int, probes: int) -> None:
    for side in ("before", "after"):
        assert len(list(read_jsonl(out / f"eval_{side}.jsonl"))) == episodes
        assert len(list(read_jsonl(out / f"crisis_{side}.jsonl"))) == probes


def test_dpo_script_plays_an_llm_patient_with_its_settings(tmp_path):
    # A scripted backend plays the LLM patient: the test is about what reaches the env, not about the text.
    run_script(
        "dpo", tmp_path, patient="scripted", patient_ratings="end", collect_episodes=2, k=4, rounds=2,
        max_new_tokens=10, min_margin=0.01, eval_limit=1, eval_attitudes="active", crisis_per_type=0, per_device_train_batch_size=2,
        rollout_batch_size=2, max_length=320, report_to="none", heldout_patient="none",
    )
    for name in ("eval_before.jsonl", "eval_after.jsonl"):
        (episode,) = read_jsonl(tmp_path / name)
        patient = [t for t in episode["transcript"]["turns"] if t["speaker"] == "patient"]
        assert {t["text"] for t in patient} == {"I see."}
        # rated once, after the last reply ('end'); the scripted "I see." is no number, so it is flagged, not invented
        assert [bool(t["meta"].get("satisfaction_unparsed")) for t in patient] == [False] * (len(patient) - 1) + [True]


def test_sft_script_trains_on_best_of_k_data(tmp_path):
    train = run_script(
        "sft", tmp_path, collect_episodes=2, k=2, rounds=2, max_new_tokens=12, min_score=-10.0,
        max_steps=2, per_device_train_batch_size=2, max_length=384, eval="false", report_to="none",
    )["train"]
    assert train["steps"] == 2 and train["examples"] >= 1
    assert train["trainable_tensors_changed"] == train["trainable_tensors"] > 0
    assert_adapter(tmp_path / "adapter")
    examples = list(read_jsonl(tmp_path / "sft_examples.jsonl"))
    assert len(examples) == train["examples"]


def test_grpo_script_plays_whole_sessions_and_updates_the_policy(tmp_path):
    results = run_script(
        "grpo", tmp_path, sessions=2, rounds=2, num_generations=2, max_completion_length=12, max_steps=2,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3, report_to="none",
        eval_limit=1, eval_attitudes="active", crisis_per_type=1, rollout_batch_size=4, heldout_patient="rule",
        heldout_limit=1,
    )
    assert_eval_block(results["eval"], episodes=1)
    assert_eval_files(tmp_path, episodes=1, probes=4)
    train = results["train"]
    assert train["steps"] == 2 and train["rollout_calls"] == 2 and train["sessions_played"] == 4  # one group of 2 a step
    assert train["judge_failures"] == {"samples": 0, "groups": 0, "scored": 4}, "the rubric never fails"
    assert len(train["rewards"]) == len(train["group_reward_std"]) == 2
    assert all(isinstance(r, float) for r in train["rewards"])
    # two rounds of at most 12 policy tokens each; the patient's tokens are not counted
    assert all(12 < n <= 24 for n in train["therapist_tokens_per_session"])
    assert train["trainable_tensors_changed"] > 0
    assert_adapter(tmp_path / "adapter")
    assert results["adapter"] == str(tmp_path / "adapter")
