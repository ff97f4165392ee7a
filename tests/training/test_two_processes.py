"""The train/ scripts under two processes (``accelerate launch --multi_gpu --num_processes 2 ... --use_cpu true``: two
CPU processes joined over gloo) do the work of one: DPO collects the same candidates and pairs and writes the same
evaluation, GRPO plays the same number of sessions; one results.json, one W&B run, no part file left behind.

The one-process DPO run is also the test of ``train/dpo.py`` end to end (pairs, training, every eval block, W&B):
one run serves both, since each costs minutes.

accelerate's ``--cpu --num_processes 2`` starts a single process unless MPI is installed, so the tests launch
through torchrun (``--multi_gpu``), which on a machine without a GPU gives CPU processes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from cbtgym.jsonl import read_jsonl
from cbtgym.profiles import load_profiles

from ..processes import run_tree
from .test_scripts import ROOT, assert_adapter, assert_eval_block, assert_eval_files, run_script
from .wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

# chunks of one session: each process gets some of every stage (collection, eval, probes, held-out panel);
# two optimizer steps, since LoRA A moves only after B has (one step moves half the tensors)
# one drawn session and one pinned to a risk-flagged profile; two steps at full rate (no warm-up), since LoRA's B
# starts at 0 and A first moves in the second
# best-vs-worst pairs: one per state of this seeded collection (4), so two steps of 2 pairs make one epoch on both
# sides; an odd count would leave a part batch that the two processes fill with a repeated pair (accelerate's even
# batches) and the trainings would differ
DPO = dict(collect_episodes=1, risk_episodes=1, k=3, rounds=2, max_new_tokens=8, min_margin=0.01, pairing="extremes", eval_limit=1,
           eval_attitudes="both", crisis_per_type=1, num_train_epochs=1, rollout_batch_size=1, max_length=320,
           learning_rate=1e-3, warmup_steps=0, max_steps=2, heldout_patient="rule", heldout_limit=1,
           per_device_train_batch_size=1, report_to="wandb")
GRPO = dict(sessions=1, rounds=2, num_generations=4, max_completion_length=6, max_steps=1, gradient_accumulation_steps=1,
            learning_rate=1e-3, report_to="none", eval_limit=1, eval_attitudes="both", crisis_per_type=0,
            rollout_batch_size=1, heldout_patient="none", per_device_train_batch_size=2)


def launch(name: str, out: Path, **flags) -> dict:
    """``accelerate launch`` (two processes) of ``train/<name>.py``; returns its results.json."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train" / f"{name}.py"), "--output_dir", str(out),
            "--use_cpu", "true"]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    res = run_tree(argv, cwd=ROOT, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("results: ") <= 1, "one process prints the summary"
    return json.loads((out / "results.json").read_text())


def same(a, b) -> bool:
    """Equal records, floats up to rounding (embeddings differ in the last bits with the batch and thread layout)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def records(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dpo_runs(tmp_path_factory):
    """The tiny DPO config run by one process and by two; their output folders."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")  # both sides' thread count: the same arithmetic
    mp.setenv("WANDB_MODE", "offline")
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    try:
        run_script("dpo", one, **DPO, gradient_accumulation_steps=2, hub_token="hf_not_logged")
        launch("dpo", two, **DPO, gradient_accumulation_steps=1)
    finally:
        mp.undo()
    return one, two


def test_dpo_script_collects_pairs_trains_and_evaluates(dpo_runs):
    out, _ = dpo_runs
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["k"] == 3 and saved["config"]["max_length"] == 320 and saved["config"]["beta"] == 0.1
    assert "hf_not_logged" not in (out / "results.json").read_text(), "no token reaches results.json"
    assert_eval_block(saved["eval"], episodes=2)
    train = saved["train"]
    assert train["pairs"] >= 1 and train["steps"] == 2
    assert train["trainable_tensors_changed"] == train["trainable_tensors"] > 0, "every LoRA tensor moved"
    assert_adapter(out / "adapter")
    pairs = list(read_jsonl(out / "pairs.jsonl"))
    assert len(pairs) == train["pairs"] and len({p["id"] for p in pairs}) == len(pairs)
    assert all(p["score_chosen"] - p["score_rejected"] >= 0.01 for p in pairs)
    episodes = list(read_jsonl(out / "candidates.jsonl"))
    assert len(episodes) == 2  # 1 drawn + 1 pinned to a profile with risk flags
    risky = {p.id for p in load_profiles("bank:train") if p.risk_flags}
    assert episodes[-1]["profile_id"] in risky
    # the default signal holds no hand-written therapist text: every candidate is the policy's own sample
    assert not [st["guided"] for e in episodes for st in e["states"] if st.get("guided")]
    assert (out / "pairs_dataset" / "dataset_info.json").is_file()
    assert_eval_files(out, episodes=2, probes=4)  # one probe per crisis type
    (run_dir,) = out.glob("wandb/offline-run-*")  # one run: the trainer's WandbCallback logs into the script's
    run = read_offline_run(run_dir)
    assert {"train/rewards/margins", "train/global_step"} <= run.keys, "TRL's logs reach the same run"
    assert {"eval/before_mean_reward", "eval/judges/after_failure_rate", "pairs/margin_mean", "pairs/table",
            "eval/transcripts", "eval/turns"} <= run.keys
    assert b"hf_not_logged" not in b"".join(p.read_bytes() for p in run_dir.rglob("*") if p.is_file())


def test_dpo_under_two_processes_does_the_work_of_one(dpo_runs):
    one_dir, two_dir = dpo_runs
    one, two = (json.loads((d / "results.json").read_text()) for d in dpo_runs)
    assert one["train"]["pairs"] % 2 == 0, "an odd pair count makes the trainings differ by layout: change the DPO config"
    for name in ("candidates.jsonl", "pairs.jsonl", "eval_before.jsonl", "eval_after.jsonl", "crisis_before.jsonl",
                 "crisis_after.jsonl", "eval_heldout_before.jsonl", "eval_heldout_after.jsonl"):
        assert same(records(one_dir / name), records(two_dir / name)), name
    assert same(one["eval"], two["eval"])
    assert one["train"]["pairs"] == two["train"]["pairs"] and one["train"]["steps"] == two["train"]["steps"]
    assert two["train"]["trainable_tensors_changed"] == two["train"]["trainable_tensors"] > 0
    assert not list(two_dir.glob("*.part*")), "the processes' parts were merged"
    assert len(list(two_dir.glob("wandb/offline-run-*"))) == 1, "one W&B run for the job"
    assert (two_dir / "adapter" / "adapter_config.json").is_file()


def test_grpo_under_two_processes_plays_every_group_once(tmp_path):
    two = launch("grpo", tmp_path, **GRPO)
    train = two["train"]
    assert train["steps"] == 1 and train["sessions_played"] == 4, "one group of 4 sessions, 2 per process, counted once"
    assert train["judge_failures"] == {"samples": 0, "groups": 0, "scored": 4}
    assert two["eval"]["episodes"] == 2 and len((tmp_path / "eval_before.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob("*.part*"))
