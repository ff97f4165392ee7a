"""bench/gpu_check.py on CPU with a tiny Llama shape: the same code path a GPU run takes (decode rows against the
bandwidth ceiling, a LoRA DPO step and a multi-turn GRPO step through TRL), and its --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def test_help_documents_what_it_measures():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--shape" in out and "bandwidth" in out and "GRPO" in out and "QLoRA" in out


@pytest.mark.slow
def test_tiny_shape_runs_every_step_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--device", "cpu", "--batches", "1,4",
                          "--new_tokens", "6", "--copy_gb", "0.1", "--pairs", "2", "--max_length", "384",
                          "--generations", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["batch"] for r in result["decode"]] == [1, 4]
    for r in result["decode"]:
        assert r["tokens"] > 0 and 0 < r["share_of_ceiling"] and r["ceiling_tokens_per_s"] > r["tokens_per_s"] / 10
    assert result["dpo"]["seconds"] > 0 and result["dpo"]["loss"] is not None and result["dpo"]["peak_gb"] > 0
    assert result["grpo"]["sessions"] == 2 and result["grpo"]["reward"] is not None
    assert result["qlora_dpo"] == "needs a GPU"
    assert "| hf decode, batch 4 |" in res.stdout and "| grpo step |" in res.stdout
