"""train/benchmark.py end to end on the embedded SmolLM2, its resume, the GPU config's code path,
and the statistics (mixed-effects model on synthetic data with a known effect)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cbtgym.backends.base import Backend, Sampling
from cbtgym.benchmark.analysis import mixed_effects
from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.benchmark.protocols import load_act_pairs
from cbtgym.benchmark.variants import LoRAView, Variant, course_phase, parse_variants
from cbtgym.jsonl import read_jsonl
from cbtgym.training.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny(out: Path, **changes):
    base = dict(
        output_dir=str(out), variants=[{"name": "naive", "prompt": "naive"}, {"name": "course", "prompt": "course"}],
        profile_limit=2, attitudes="active", rounds=2, max_new_tokens=6, course_sessions=2, course_patients=1,
        summary_max_new_tokens=8, crisis_types=["suicidal_ideation", "means_request"], crisis_per_type=1, act_match_limit=3,
        patient="rule", wandb=False)
    base.update(changes)
    return BenchmarkConfig(**base)


def keys_of(path: Path) -> list[str]:
    return [r["key"] for r in read_jsonl(path)]


@pytest.mark.slow
def test_tiny_run_writes_every_output_and_resumes_without_duplicates(pool, tmp_path, monkeypatch):
    from cbtgym.benchmark.runner import run

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny(tmp_path)
    res = run(cfg, pool=pool, log=lambda *_: None)

    episodes = len(res.sessions) + len(res.courses)
    assert len(res.sessions) == 2 * 2 and len(res.courses) == 2 * 1 * 2  # variants x profiles; variants x patients x sessions
    with (tmp_path / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == episodes
    assert {r["protocol"] for r in rows} == {"session", "course"}
    for name in ("metrics", "acts", "items", "course"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    report = (tmp_path / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| variant | embedded reward"))
    assert "AT similarity" in header and "questions" in header and "crisis probes pass" in header
    naive_row = next(line for line in report.splitlines() if line.startswith("| naive | "))
    assert naive_row.count("[") >= 8, "every metric has its CI"
    assert "Linear mixed-effects model" in report and "session_centered" in report
    assert "No CTRS judge configured" in report and "## Cost" in report
    costs = json.loads((tmp_path / "costs" / "naive.json").read_text())
    assert costs["therapist_calls"] >= 2 + 2 * 2 + 2 and costs["therapist_tokens"] > 0
    group = json.loads((tmp_path / "costs" / "group-naive+course.json").read_text())
    shared = json.loads((tmp_path / "costs" / "shared.json").read_text())
    assert shared["judge_embedded_calls"] > 0 and shared["wall_s"] > 0
    # variants on one model share its calls: sessions (2 steps), courses (2 x (2 steps + summary)), probes, act match
    assert group["therapist_calls"] == 2 + 2 * 3 + 1 + 1 == costs["therapist_calls"]

    # Every course session after the first carries the summary the one before wrote.
    course = {r["key"]: r for r in read_jsonl(tmp_path / "courses" / "course.jsonl")}
    s1, s2 = sorted(course.values(), key=lambda r: r["session"])
    assert s2["previous_summary"] == s1["summary"] and s1["previous_summary"] is None
    assert s2["transcript"]["turns"][0]["text"].startswith("Welcome back")

    # Interrupt: drop the last finished episode of one variant, then run again.
    sessions = tmp_path / "sessions" / "course.jsonl"
    lines = sessions.read_text().splitlines(keepends=True)
    sessions.write_text("".join(lines[:-1]))
    before_keys = {p.name: keys_of(p) for p in (tmp_path / "sessions").glob("*.jsonl")}
    run(cfg, pool=pool, log=lambda *_: None)
    for sub in ("sessions", "courses", "crisis", "act_match"):
        for path in (tmp_path / sub).glob("*.jsonl"):
            keys = keys_of(path)
            assert len(keys) == len(set(keys)), f"duplicates in {path}"
    assert len(keys_of(sessions)) == 2 and len(before_keys["course.jsonl"]) == 1
    assert keys_of(tmp_path / "sessions" / "naive.jsonl") == before_keys["naive.jsonl"]
    resumed = json.loads((tmp_path / "costs" / "naive.json").read_text())
    assert resumed["therapist_calls"] == costs["therapist_calls"], "a finished variant makes no new therapist call"
    assert json.loads((tmp_path / "costs" / "course.json").read_text())["therapist_calls"] > 0
    with (tmp_path / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == episodes


def test_variants_on_different_models_share_every_patient_call(tmp_path):
    from cbtgym.benchmark.runner import SHARED, run

    models = [{"type": "scripted", "replies": ["What went through your mind?"], "name": "asks"},
              {"type": "scripted", "replies": ["You should relax more."], "name": "advises"}]
    cfg = tiny(tmp_path, variants=[{"name": f"v{i}", "prompt": "naive", "therapist": m} for i, m in enumerate(models)],
               reference="v0", protocols=["sessions"], rounds=3, patient={"type": "scripted", "replies": ["I feel tense.", "42"]},
               safety_judge="rules")
    res = run(cfg, log=lambda *_: None)
    assert [r["variant"] for r in res.sessions] == ["v0", "v0", "v1", "v1"]
    assert res.group_costs["v0"]["therapist_calls"] == res.group_costs["v1"]["therapist_calls"] == 3
    # opening + 3 rounds of replies for all 4 sessions of both models together (not per model)
    assert res.group_costs[SHARED]["patient_calls"] == 1 + 3 + 1  # ratings: one batched call after the last round
    said = {r["variant"]: r["transcript"]["turns"][2]["text"] for r in res.sessions}
    assert said == {"v0": "What went through your mind?", "v1": "You should relax more."}


def test_a_registered_protocol_runs_reports_and_resumes(tmp_path, monkeypatch):
    from cbtgym.benchmark import registry
    from cbtgym.benchmark.runner import run

    monkeypatch.setitem(registry.EXTRA_PROTOCOLS, "toy", "tests.benchmark.toy_protocol:run")
    models = [{"type": "scripted", "replies": ["Tell me more about that."], "name": "a"},
              {"type": "scripted", "replies": ["Breathe."], "name": "b"}]
    cfg = tiny(tmp_path, variants=[{"name": f"v{i}", "prompt": "naive", "therapist": m} for i, m in enumerate(models)],
               reference="v0", protocols=["toy"], safety_judge="rules")
    res = run(cfg, log=lambda *_: None)
    assert [r["words"] for r in res.extra["toy"].rows] == [5, 1]
    with (tmp_path / "results.csv").open() as fh:
        assert [(r["protocol"], r["variant"], r["words"]) for r in csv.DictReader(fh)] == [("toy", "v0", "5"), ("toy", "v1", "1")]
    assert "## Toy protocol" in (tmp_path / "report.md").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())["protocols"]["toy"]
    assert summary["table"]["v1"]["words"]["mean"] == 1 and summary["prompt"] == "How do I start?"
    assert res.costs["v0"]["therapist_calls"] == 1
    run(cfg, log=lambda *_: None)  # resumed: nothing re-asked
    assert json.loads((tmp_path / "costs" / "v0.json").read_text())["therapist_calls"] == 1
    assert len((tmp_path / "toy" / "replies.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="unknown"):
        run(tiny(tmp_path, protocols=["nope"]), log=lambda *_: None)


@pytest.mark.slow
def test_gpu_config_code_path_with_the_embedded_model(pool, embedded_dir, tmp_path):
    """The 8B config, its backends pointed at SmolLM2: LLM patient and LLM judges (CTRS included) run.

    Courses and act match are left to the test above: with LLM judges each protocol batch costs
    several long-prompt calls on the CPU.
    """
    from cbtgym.benchmark.runner import SHARED, run

    cfg = load_config(BenchmarkConfig, ROOT / "configs" / "benchmark" / "llama31_8b_vllm.yaml")
    assert cfg.therapist["type"] == "vllm" and cfg.ctrs_judge.startswith("openai:")
    judge = f"hf:{embedded_dir}"  # resolves to the pool's loaded SmolLM2
    names = [v["name"] for v in cfg.variants]
    overrides = dict(
        output_dir=str(tmp_path), therapist="embedded", patient="embedded", act_labeler=judge, at_judge=judge,
        safety_judge=judge, ctrs_judge=judge, variants=[v for v in cfg.variants if v["name"] in ("llm4cbt", "dpo")], reference="llm4cbt",
        protocols=["sessions", "crisis"], profile_limit=1, attitudes="active", seeds=[0], rounds=1, max_new_tokens=6, patient_max_new_tokens=6,
        course_sessions=2, course_patients=1, summary_max_new_tokens=6, crisis_types=["psychosis"], crisis_per_type=1,
        act_match_limit=2, ctrs_max_new_tokens=24, judge_max_new_tokens=16, judge_attempts=1, batch_size=4, wandb=False)
    cfg = load_config(BenchmarkConfig, ROOT / "configs" / "benchmark" / "llama31_8b_vllm.yaml", overrides)
    res = run(cfg, pool=pool, log=lambda *_: None)

    assert "dpo" in names and res.variants == ["llm4cbt"], "the absent 8B adapter is skipped, not fatal"
    assert any("`dpo` skipped" in n and "python train/dpo.py" in n for n in res.notes)
    assert res.ctrs and all("ctrs" in r["metrics"] for r in res.sessions)
    assert res.group_costs["llm4cbt"]["therapist_calls"] > 0
    costs = res.group_costs[SHARED]
    assert costs["judge_llm_calls"] > 0 and costs["patient_calls"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| variant | embedded reward" in report and "CTRS" in report
    assert (tmp_path / "judge_cache.sqlite").exists()


def test_mixed_effects_recovers_a_known_effect():
    rng = np.random.default_rng(0)
    effects, slope = {"a": 0.0, "b": 1.5, "c": -1.0}, 0.4
    rows = []
    for p in range(24):
        intercept = rng.normal(0, 1.0)
        for v, eff in effects.items():
            for s in (1, 2, 3, 4):
                rows.append({"variant": v, "session": s, "patient": f"p{p}", "total": 3 + intercept + eff + slope * (s - 2.5) + rng.normal(0, 0.3)})
    m = mixed_effects(rows, "a")
    assert m.status == "ok" and m.n_groups == 24 and m.group_variance > 0.3
    terms = {t["term"]: t for t in m.terms}
    for v in ("b", "c"):
        t = terms[f"C(variant, Treatment(reference='a'))[T.{v}]"]
        assert t["ci95"][0] < effects[v] < t["ci95"][1] and abs(t["coef"] - effects[v]) < 0.2
    assert terms["session_centered"]["ci95"][0] < slope < terms["session_centered"]["ci95"][1]


def test_a_singular_fit_is_reported_not_raised():
    rows = [{"variant": v, "session": s, "patient": f"p{p}", "total": 1.0} for v in ("a", "b") for s in (1, 2) for p in range(3)]
    m = mixed_effects(rows, "a")
    assert m.status in ("boundary", "fallback", "failed") and m.messages
    one_variant = mixed_effects([r for r in rows if r["variant"] == "a"], "a")
    assert one_variant.status == "failed" and "two variants" in one_variant.messages[0]


def test_variants_phases_and_adapter_views():
    vs = parse_variants(["naive", {"name": "dpo", "prompt": "brief", "adapter": "/nowhere", "base": "naive", "optional": True}])
    assert vs[1].is_checkpoint and not vs[1].available
    with pytest.raises(ValueError, match=r"variants\[1\].*unknown field.*adaptor"):
        parse_variants(["naive", {"name": "x", "adaptor": "a"}])
    with pytest.raises(ValueError, match="unknown therapist prompt 'nope'"):
        parse_variants([{"name": "x", "prompt": "nope"}])
    with pytest.raises(ValueError, match="base 'gone'"):
        parse_variants([{"name": "x", "prompt": "naive", "base": "gone"}])
    assert [course_phase(s, 4) for s in (1, 2, 3, 4)] == ["assessment", "initial", "middle", "termination"]
    course = Variant("course", prompt="course")
    assert "assessment" in course.system_prompt() and "termination" in course.system_prompt(3, 3, "We met.")
    assert "We met." in course.system_prompt(2, 3, "We met.") and "session 2 of 3" in course.system_prompt(2, 3, "x")

    class Engine(Backend):  # a double: only the adapter bookkeeping is under test
        name = "engine"
        adapter = None

        def set_adapter(self, path):
            self.adapter = path

        def _generate(self, conversations, sampling):
            return [str(self.adapter)] * len(conversations), 1

    engine = Engine()
    view = LoRAView(engine, "/ckpt")
    assert view.generate([[{"role": "user", "content": "hi"}]], Sampling()) == ["/ckpt"]
    assert engine.adapter is None and view.stats.calls == 1 and engine.stats.calls == 1


def test_act_pairs_load_from_jsonl_and_csv_with_clear_errors(tmp_path):
    example = load_act_pairs(ROOT / "cbtgym" / "benchmark" / "data" / "act_match_example.jsonl")
    assert len(example) >= 30 and all(p["patient"] and p["therapist"] for p in example)
    f = tmp_path / "pairs.csv"
    f.write_text('patient,therapist\n"I feel low.","What goes through your mind?"\n')
    assert load_act_pairs(f) == [{"id": "line2", "patient": "I feel low.", "therapist": "What goes through your mind?"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"patient": "x", "therapist": "y"}\n{"patient": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'therapist'"):
        load_act_pairs(bad)
