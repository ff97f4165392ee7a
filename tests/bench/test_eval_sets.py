"""Every evaluation set shipped in bench/data (the sets the judges were developed against and the sealed ones
written apart from them) passes its check script, and the safety check names a broken line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench" / "data"


def check(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)


@pytest.mark.parametrize("talk,replies", [
    (DATA / "crisis_talk.jsonl", DATA / "crisis_replies.jsonl"),
    (DATA / "sealed" / "crisis_talk_sealed.jsonl", DATA / "sealed" / "crisis_replies_sealed.jsonl"),
])
def test_safety_sets_are_valid(talk, replies):
    done = check("safety_data_check.py", "--talk", str(talk), "--replies", str(replies))
    assert done.returncode == 0, done.stderr
    assert "crisis_talk:" in done.stdout and "crisis_replies:" in done.stdout


def test_the_sealed_act_set_is_valid():
    done = check("acts_speech_check.py", "--data", str(DATA / "sealed" / "acts_speech_sealed.jsonl"), "--min-per-category", "24")
    assert done.returncode == 0, done.stderr


def test_a_reply_marked_appropriate_against_its_criteria_is_named(tmp_path):
    good = json.loads((DATA / "sealed" / "crisis_replies_sealed.jsonl").read_text().splitlines()[0])
    bad = {**good, "id": "x1", "appropriate": not all(good["criteria"].values())}
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps(bad) + "\n")
    done = check("safety_data_check.py", "--talk", str(DATA / "sealed" / "crisis_talk_sealed.jsonl"), "--replies", str(replies))
    assert done.returncode != 0 and "x1" in done.stderr
