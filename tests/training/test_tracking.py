"""W&B tracking: an offline run receives the eval metrics, reward components, judge failure rate, pair margins and
the transcript tables under the keys of cbtgym/training/tracking.py; no secret reaches it; the dashboard's panels
name only keys that are logged, and its dry run builds the workspace definition."""

from __future__ import annotations

import inspect
import json
import re
import sys
from dataclasses import dataclass

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.training.arguments import DPOArguments
from cbtgym.training.config import ConfigError
from cbtgym.training.dashboard import PANELS_PATH, load_panels, panel_keys
from cbtgym.training.heldout import EvalPanel
from cbtgym.training.preferences import pairs_from_candidates
from cbtgym.training.tracking import (GROUP_KEYS, TRAINER_KEYS, group_spread, init_wandb, judge_failure_rate, log_eval,
                                      log_group_spread, log_pairs, redacted_argv)

from .wandb_offline import read_offline_run

SECRET_ENV, SECRET_FLAG, SECRET_FIELD = "sk-env-not-logged", "hf-flag-not-logged", "field-not-logged"


@dataclass
class Credentials:
    judge_api_key: str = SECRET_FIELD
    rounds: int = 2


def candidates_file(tmp_path):
    """Three states of k=3 candidates, one score a failed judge (None): two pairs, margins 1.5 and 1.0."""
    prompt = [{"role": "system", "content": "You are a CBT therapist."}, {"role": "user", "content": "I feel stuck at work."}]
    states = [{"turn": 0, "prompt": prompt, "candidates": ["a", "What went through your mind?", "c"], "scores": [0.0, 1.5, 0.2]},
              {"turn": 1, "prompt": prompt, "candidates": ["x", "y", "z"], "scores": [None, 1.0, 0.0]},
              {"turn": 2, "prompt": prompt, "candidates": ["p", "q", "r"], "scores": [0.1, 0.1, 0.1]}]
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"key": "s0", "states": states}) + "\n")
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A real evaluation (scripted policies, rule patient, composite reward, rule patient held-out panel, crisis
    probes) and DPO pairs logged to an offline run; the run read back from its files."""
    tmp_path = tmp_path_factory.mktemp("wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("OPENAI_API_KEY", SECRET_ENV)
    mp.setattr(sys, "argv", ["train/dpo.py", "--hub_token", SECRET_FLAG, "--k", "4"])
    args = DPOArguments(eval_limit=1, eval_attitudes="both", crisis_per_type=1, heldout_patient="rule",
                        heldout_reward="placeholder", heldout_limit=1)
    panel = EvalPanel(args, tmp_path, env_kwargs=dict(profiles=args.eval_profiles, max_rounds=2, reward_fn="composite"),
                      rounds=2, max_new_tokens=8, batch_size=4, checker="rules")
    panel.run("before", ScriptedBackend(["Nice weather today."]))
    panel.run("after", ScriptedBackend(["What went through your mind when it happened?"]))
    block = panel.results()
    path = candidates_file(tmp_path)
    pairs = pairs_from_candidates(path, 0.5)
    run = init_wandb((args, Credentials()), "dpo", "HuggingFaceTB/SmolLM2-135M-Instruct", 0, str(tmp_path))
    log_eval(run, block, panel.episodes)
    log_pairs(run, pairs, path)
    run.finish()
    # finish() can return before wandb-core has written the run log (seen under load); teardown waits for it
    import wandb

    wandb.teardown()
    mp.undo()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    return read_offline_run(run_dir), block, panel.episodes, pairs


@pytest.mark.slow  # the composite reward's embedded judges load MiniLM
def test_offline_run_gets_the_eval_metrics_and_reward_components(logged):
    run, block, episodes, _ = logged
    assert run.config["k"] == DPOArguments().k and run.config["rounds"] == 2
    assert run.summary["eval/before_mean_reward"] == pytest.approx(block["before"]["mean_reward"])
    assert run.summary["eval/delta"] == pytest.approx(block["delta"]["mean"])
    assert run.summary["eval/heldout/after_mean_reward"] == pytest.approx(block["heldout"]["after"]["mean_reward"])
    comps = block["after"]["components"]
    assert {"rubric", "safety_ok", "judge_failures"} <= set(comps)
    for name in ("rubric", "safety_ok"):
        assert run.summary[f"eval/components/after_{name}"] == pytest.approx(comps[name])
        assert run.summary[f"eval/components/delta_{name}"] == pytest.approx(comps[name] - block["before"]["components"][name])
    # the embedded judges never fail to parse: a rate of 0 over every eval step, logged, not left out
    assert run.summary["eval/judges/before_failure_rate"] == 0.0 == judge_failure_rate(episodes["before"])
    table = run.table("eval/components")
    assert table["columns"] == ["component", "before", "after", "delta"]
    assert {row[0] for row in table["data"]} == set(comps)


@pytest.mark.slow
def test_offline_run_gets_transcript_tables_with_per_turn_components(logged):
    run, _, episodes, _ = logged
    transcripts = run.table("eval/transcripts")
    assert [r[0] for r in transcripts["data"]] == ["before"] * 2 + ["after"] * 2, "both sides, both attitudes"
    text = transcripts["data"][-1][transcripts["columns"].index("transcript")]
    assert "What went through your mind" in text and "rubric=" in text and "reward " in text
    turns = run.table("eval/turns")
    assert turns["columns"][:6] == ["side", "key", "round", "therapist", "patient", "reward"]
    assert {"rubric", "safety_ok"} <= set(turns["columns"][6:])
    steps = sum(len(ep["components"]) for eps in episodes.values() for ep in eps)
    assert len(turns["data"]) == steps
    first_after = episodes["after"][0]
    row = next(r for r in turns["data"] if r[0] == "after" and r[1] == first_after["key"] and r[2] == 1)
    assert row[3].startswith("What went through your mind")
    assert row[5] == pytest.approx(first_after["rewards"][0])
    assert row[turns["columns"].index("rubric")] == pytest.approx(first_after["components"][0]["rubric"])


@pytest.mark.slow
def test_offline_run_gets_pair_margins_failures_and_the_pair_table(logged):
    run, _, _, pairs = logged
    margins = [p["margin"] for p in pairs]
    assert len(pairs) == 2 and run.summary["pairs/count"] == 2
    assert run.summary["pairs/margin_mean"] == pytest.approx(sum(margins) / 2)
    assert run.summary["pairs/judge_failures"] == 1 and run.summary["pairs/judge_failure_rate"] == pytest.approx(1 / 9)
    hist = next(row["pairs/margin"] for row in run.history if "pairs/margin" in row)
    assert hist["_type"] == "histogram" and sum(hist["values"]) == 2
    table = run.table("pairs/table")
    assert table["columns"] == ["id", "prompt_tail", "chosen", "rejected", "score_chosen", "score_rejected", "margin"]
    assert table["data"][0][0] == "s0#0" and "I feel stuck at work." in table["data"][0][1]
    assert table["data"][0][2] == "assistant: What went through your mind?"
    assert [r[-1] for r in table["data"]] == pytest.approx(margins)


@pytest.mark.slow
def test_no_secret_reaches_the_run(logged):
    run = logged[0]
    assert "judge_api_key" not in run.config
    blob = b"".join(p.read_bytes() for p in run.dir.rglob("*") if p.is_file())
    for secret in (SECRET_ENV, SECRET_FLAG, SECRET_FIELD):
        assert secret.encode() not in blob, f"{secret} in the run's files"
    assert b"--hub_token" in blob, "the metadata still records the command line, redacted"


@pytest.mark.slow
def test_every_dashboard_key_is_one_the_scripts_log(logged):
    run = logged[0]
    _, sections = load_panels()
    trainer = {k for keys in TRAINER_KEYS.values() for k in keys} | {f"train/{k}" for k in GROUP_KEYS}
    missing = sorted(k for k in panel_keys(sections) if k not in run.keys and k not in trainer)
    assert not missing, f"panels name keys nothing logs: {missing}"
    for panel in (p for s in sections for p in s.panels if p.regex):
        assert any(re.search(panel.regex, k) for k in run.keys), f"{panel.title}: {panel.regex} matches no logged key"


def test_trainer_keys_are_the_metric_names_trl_logs():
    from trl import DPOTrainer, GRPOTrainer, SFTTrainer

    sources = {"dpo": DPOTrainer, "sft": SFTTrainer, "grpo": GRPOTrainer}
    for method, keys in TRAINER_KEYS.items():
        src = inspect.getsource(inspect.getmodule(sources[method]))
        for key in keys:
            name = key.removeprefix("train/")
            assert name == "loss" or f'["{name}"]' in src, f"TRL's {method} trainer logs no {name!r}"


def test_group_spread_of_known_groups():
    # groups of 3: spread 0 (no signal), [0, 1, 2] (std sqrt(2/3), range 2), one unscored completion left out
    spread = group_spread([1.0, 1.0, 1.0, 0.0, 1.0, 2.0, None, 0.5, 1.5], 3)
    assert set(spread) == set(GROUP_KEYS)
    assert spread["group/reward_std"] == pytest.approx(((2 / 3) ** 0.5 + 0.5) / 3)
    assert spread["group/reward_range"] == pytest.approx((0 + 2 + 1) / 3)
    assert spread["group/zero_spread"] == pytest.approx(1 / 3)
    seen = {}
    log_group_spread(lambda name, value: seen.__setitem__(name, value), [0.0, 1.0], 2)
    assert seen == {"group/reward_std": 0.5, "group/reward_range": 1.0, "group/zero_spread": 0.0}
    log_group_spread(None, [0.0, 1.0], 2)  # outside the trainer: nothing to log to, no error
    with pytest.raises(ValueError, match="^group_size: .*num_generations"):
        group_spread([0.0, 1.0, 2.0], 2)


def test_judge_failure_rate_counts_failed_steps():
    eps = [{"components": [{"judge_failures": 1.0}, {"judge_failures": 0.0}]}, {"components": [{"rubric": 0.3}, {}]}]
    assert judge_failure_rate(eps) == 0.25
    assert judge_failure_rate([{"components": []}]) is None


def test_secret_flags_are_redacted():
    argv = ["--hub_token", "hf_x", "--k", "4", "--judge-api-key=abc", "--output_dir", "out/token_run"]
    assert redacted_argv(argv) == ["--hub_token", "***", "--k", "4", "--judge-api-key=***", "--output_dir", "out/token_run"]


def test_dashboard_dry_run_builds_the_panels_of_the_yaml(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb_workspaces")
    from cbtgym.cli import main

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "dashboard.json"
    assert main(["dashboard", "--entity", "me", "--project", "cbtgym", "--out", str(out)]) == 0
    assert "not saved (no WANDB_API_KEY)" in capsys.readouterr().err
    spec = json.loads(out.read_text())
    assert (spec["entity"], spec["project"], spec["displayName"]) == ("me", "cbtgym", "cbtgym")
    built = spec["spec"]["section"]["panelBankConfig"]["sections"]
    _, sections = load_panels()
    assert [s["name"] for s in built] == [s.name for s in sections]
    for got, want in zip(built, sections):
        assert len(got["panels"]) == len(want.panels)
        for panel, p in zip(got["panels"], want.panels):
            kind = {"bar": "Bar Chart", "scalar": "Scalar Chart", "line": "Run History Line Plot", "table": "Weave"}[p.kind]
            assert panel["viewType"] == kind
            if p.kind == "table":
                assert f'"{p.keys[0]}"' in json.dumps(panel), f"table panel of {p.keys[0]}"
            elif p.regex:
                assert panel["config"]["metricRegex"] == p.regex
            else:
                assert panel["config"]["metrics"] == list(p.keys)
    assert main(["dashboard", "--entity", "me", "--project", "cbtgym", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)["spec"]["section"]["panelBankConfig"]["sections"]
    # the same workspace printed (panel ids are drawn anew on each build)
    assert [[p["config"] for p in s["panels"]] for s in printed] == [[p["config"] for p in s["panels"]] for s in built]


@pytest.mark.parametrize("panel, field", [({"type": "pie", "title": "x", "key": "eval/delta"}, "panels[0].type"),
                                          ({"type": "bar", "title": "x", "key": "eval/delta"}, "panels[0].keys"),
                                          ({"type": "bar", "title": "x", "regex": "eval/.*"}, "panels[0].keys"),
                                          ({"type": "scalar", "title": "x", "keys": ["a"]}, "panels[0].key")])
def test_a_wrong_panel_is_named(tmp_path, panel, field):
    path = tmp_path / "panels.yaml"
    path.write_text(json.dumps({"name": "x", "sections": [{"name": "s", "panels": [panel]}]}))
    with pytest.raises(ConfigError, match=re.escape(f"sections[0].{field}")):
        load_panels(path)
    assert load_panels(PANELS_PATH)[0] == "cbtgym"
