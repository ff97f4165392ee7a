"""The ``distortions`` protocol: its logic on scripted therapists (scores, unparsed, resume) and a tiny run on SmolLM2."""

from __future__ import annotations

import csv
import json

import pytest

from cbtgym.benchmark.distortions import item_scores
from cbtgym.training.config import ConfigError

from .test_benchmark import tiny

THOUGHTS = [{"id": "a", "text": "I'm such a loser.", "labels": ["labeling"]},
            {"id": "b", "text": "I'm tired after work.", "labels": []}]


def write_thoughts(tmp_path):
    path = tmp_path / "thoughts.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in THOUGHTS))
    return path


def test_item_scores():
    assert item_scores(["labeling"], ["labeling", "blaming"]) == {
        "exact": 0.0, "any_match": 1.0, "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "unparsed": 0.0}
    assert item_scores([], [])["exact"] == 1.0 and item_scores([], [])["f1"] == 1.0
    assert item_scores(["labeling"], None) == {"exact": 0.0, "any_match": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "unparsed": 1.0}


def test_scripted_therapists_are_scored_counted_and_resumed(tmp_path):
    from cbtgym.benchmark.runner import run

    models = [{"type": "scripted", "replies": ['{"labels": ["labeling"]}'], "name": "a"},
              {"type": "scripted", "replies": ["Tell me more."], "name": "b"}]
    cfg = tiny(tmp_path, variants=[{"name": f"v{i}", "prompt": "naive", "therapist": m} for i, m in enumerate(models)],
               reference="v0", protocols=["distortions"], safety_judge="rules", distortions_file=str(write_thoughts(tmp_path)),
               distortions_detector="none")
    out = run(cfg, log=lambda *_: None).extra["distortions"]
    t = out.table
    assert t["v0"]["exact"]["mean"] == 0.5 and t["v0"]["recall"]["mean"] == 0.5 and t["v0"]["unparsed"]["mean"] == 0
    assert t["v1"]["unparsed"]["mean"] == 1 and t["v1"]["f1"]["mean"] == 0
    assert out.summary["sets"]["v1"]["unparsed"] == 2 and out.summary["sets"]["v0"]["micro_f1"] == pytest.approx(2 / 3)
    assert "## Cognitive distortions" in (tmp_path / "report.md").read_text()
    with (tmp_path / "results.csv").open() as fh:
        assert sum(r["protocol"] == "distortions" for r in csv.DictReader(fh)) == 4
    run(cfg, log=lambda *_: None)  # resumed: nothing re-asked
    assert json.loads((tmp_path / "costs" / "v0.json").read_text())["therapist_calls"] == 1
    assert len((tmp_path / "distortions" / "records.jsonl").read_text().splitlines()) == 4
    with pytest.raises(ConfigError, match="distortions_limit"):
        tiny(tmp_path, distortions_limit=-1)


@pytest.mark.slow
def test_tiny_run_on_smollm2_with_the_reference_detector(pool, tmp_path, monkeypatch):  # noqa: F811
    from cbtgym.benchmark.runner import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny(tmp_path, variants=[{"name": "naive", "prompt": "naive"}], protocols=["distortions"], safety_judge="rules",
               distortions_limit=2, distortions_max_new_tokens=8)
    out = run(cfg, pool=pool, log=lambda *_: None).extra["distortions"]
    assert set(out.table) == {"naive", "detector"} and out.summary["thoughts"] == 2
    assert all(out.table[row]["f1"]["n"] == 2 for row in out.table)
    assert out.table["detector"]["unparsed"]["mean"] == 0
