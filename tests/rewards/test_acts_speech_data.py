"""The transcribed-speech act set (bench/data/acts_speech.jsonl) passes its own check, and the check
rejects the mistakes a hand-written line can make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "bench" / "acts_speech_check.py"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)


def test_the_shipped_set_is_valid_and_big_enough():
    done = run_check()
    assert done.returncode == 0, done.stderr
    assert "ids unique, labels valid" in done.stdout


GOOD = {"id": "a0001", "text": "so you felt kind of stuck", "category": "reflection", "type": "reflection_emotions"}


@pytest.mark.parametrize(("bad", "field"), [
    ({"id": "a0001"}, "'id'"),                                  # a second line with the same id
    ({"id": "a0002", "category": "advice"}, "'category'"),
    ({"id": "a0002", "type": "question_emotions"}, "'type'"),   # a type of another category
    ({"id": "a0002", "text": "mm-hm"}, "'text'"),               # under 3 words
])
def test_a_bad_line_is_named(tmp_path, bad, field):
    data = tmp_path / "acts.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **bad}) + "\n")
    done = run_check("--data", str(data))
    assert done.returncode == 1
    assert f"{data}:2: field {field}" in done.stderr
