"""The train/ scripts under two processes (``accelerate launch --multi_gpu --num_processes 2 ... --use_cpu true``: two
CPU processes joined over gloo) do the work of one: DPO collects the same candidates and pairs and writes the same
evaluation, GRPO plays the same number of sessions; one results.json, one W&B run, no part file left behind.

accelerate's ``--cpu --num_processes 2`` starts a single process unless MPI is installed, so the tests launch
through torchrun (``--multi_gpu``), which on a machine without a GPU gives CPU processes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_scripts import ROOT, run_script

pytestmark = pytest.mark.slow

# chunks of one session: each process gets some of every stage (collection, eval, probes, held-out panel);
# two optimizer steps, since LoRA A moves only after B has (one step moves half the tensors)
DPO = dict(collect_episodes=2, risk_episodes=0, k=3, rounds=2, max_new_tokens=6, min_margin=0.01, eval_limit=1,
           eval_attitudes="both", crisis_per_type=1, num_train_epochs=1, rollout_batch_size=1, max_length=320,
           learning_rate=1e-3, warmup_steps=0, max_steps=2, heldout_patient="rule", heldout_limit=1, per_device_train_batch_size=1)
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
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
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


def test_dpo_under_two_processes_does_the_work_of_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launched processes' thread count: the same arithmetic
    one = run_script("dpo", tmp_path / "one", **DPO, gradient_accumulation_steps=2, report_to="none")
    two = launch("dpo", tmp_path / "two", **DPO, gradient_accumulation_steps=1, report_to="wandb")
    for name in ("candidates.jsonl", "pairs.jsonl", "eval_before.jsonl", "eval_after.jsonl", "crisis_before.jsonl",
                 "crisis_after.jsonl", "eval_heldout_before.jsonl", "eval_heldout_after.jsonl"):
        assert same(records(tmp_path / "one" / name), records(tmp_path / "two" / name)), name
    assert same(one["eval"], two["eval"])
    assert one["train"]["pairs"] == two["train"]["pairs"] and one["train"]["steps"] == two["train"]["steps"]
    assert two["train"]["trainable_tensors_changed"] == two["train"]["trainable_tensors"] > 0
    assert not list((tmp_path / "two").glob("*.part*")), "the processes' parts were merged"
    assert len(list((tmp_path / "two").glob("wandb/offline-run-*"))) == 1, "one W&B run for the job"
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").is_file()


def test_grpo_under_two_processes_plays_every_group_once(tmp_path):
    two = launch("grpo", tmp_path, **GRPO)
    train = two["train"]
    assert train["steps"] == 1 and train["sessions_played"] == 4, "one group of 4 sessions, 2 per process, counted once"
    assert train["judge_failures"] == {"samples": 0, "groups": 0, "scored": 4}
    assert two["eval"]["episodes"] == 2 and len((tmp_path / "eval_before.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob("*.part*"))
