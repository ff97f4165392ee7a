"""Each train/ script runs a few real steps on the embedded SmolLM2 and leaves complete outputs.

These run the scripts as a user does (``python train/x.py --flag value``, in a subprocess) with tiny
configs (a couple of sessions, short replies, one or two optimizer steps): they check the plumbing
(flags -> rollouts -> data -> TRL trainer -> adapter -> evaluation -> results.json), not the size of
the improvement, which ``python train/dpo.py`` measures at full size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbtgym.jsonl import read_jsonl
from cbtgym.profiles import load_profiles

from .wandb_offline import read_offline_run

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_script(name: str, out: Path, **flags) -> dict:
    """``python train/<name>.py --output_dir out --flag value ...``; returns its results.json."""
    argv = ["--output_dir", str(out)]
    for key, value in flags.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "train" / f"{name}.py"), *argv], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
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


def test_dpo_script_collects_pairs_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    saved = run_script(
        "dpo", tmp_path, collect_episodes=1, risk_episodes=1, k=4, rounds=2, max_new_tokens=12, min_margin=0.01,
        eval_limit=1, eval_attitudes="both", crisis_per_type=1, max_steps=2, warmup_steps=0, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, rollout_batch_size=4, max_length=384, learning_rate=1e-3, report_to="wandb", hub_token="hf_not_logged",
        heldout_patient="rule", heldout_limit=1,
    )
    assert saved["config"]["k"] == 4 and saved["config"]["max_length"] == 384 and saved["config"]["beta"] == 0.1
    assert "hf_not_logged" not in (tmp_path / "results.json").read_text(), "no token reaches results.json"
    assert_eval_block(saved["eval"], episodes=2)
    train = saved["train"]
    # two steps at full rate (no warm-up), whatever the pair count: LoRA's B starts at 0, so A first moves in the second
    assert train["pairs"] >= 1 and train["steps"] == 2
    assert train["trainable_tensors_changed"] == train["trainable_tensors"] > 0, "every LoRA tensor moved"
    assert_adapter(tmp_path / "adapter")
    pairs = list(read_jsonl(tmp_path / "pairs.jsonl"))
    assert len(pairs) == train["pairs"] and len({p["id"] for p in pairs}) == len(pairs)
    assert all(p["score_chosen"] - p["score_rejected"] >= 0.01 for p in pairs)
    episodes = list(read_jsonl(tmp_path / "candidates.jsonl"))
    assert len(episodes) == 2  # 1 drawn + 1 pinned to a profile with risk flags
    risky = {p.id for p in load_profiles("bank:train") if p.risk_flags}
    assert episodes[-1]["profile_id"] in risky
    # the default signal holds no hand-written therapist text: every candidate is the policy's own sample
    assert not [st["guided"] for e in episodes for st in e["states"] if st.get("guided")]
    assert (tmp_path / "pairs_dataset" / "dataset_info.json").is_file()
    assert_eval_files(tmp_path, episodes=2, probes=4)  # one probe per crisis type
    (run_dir,) = tmp_path.glob("wandb/offline-run-*")  # one run: the trainer's WandbCallback logs into the script's
    run = read_offline_run(run_dir)
    assert {"train/rewards/margins", "train/global_step"} <= run.keys, "TRL's logs reach the same run"
    assert {"eval/before_mean_reward", "eval/judges/after_failure_rate", "pairs/margin_mean", "pairs/table",
            "eval/transcripts", "eval/turns"} <= run.keys
    assert b"hf_not_logged" not in b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())


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
