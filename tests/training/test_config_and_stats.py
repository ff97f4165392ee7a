import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trl import DPOConfig, GRPOConfig, ModelConfig, SFTConfig

from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.training.arguments import (DPO_DEFAULTS, GRPO_DEFAULTS, SFT_DEFAULTS, DPOArguments, GRPOArguments,
                                       SFTArguments)
from cbtgym.training.config import ConfigError, config_to_dict, load_config, parse_args, parse_config
from cbtgym.training.stats import bootstrap_ci, paired_bootstrap

from ..processes import run_tree

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {"dpo": ((DPOArguments, DPOConfig, ModelConfig), DPO_DEFAULTS),
           "sft": ((SFTArguments, SFTConfig, ModelConfig), SFT_DEFAULTS),
           "grpo": ((GRPOArguments, GRPOConfig, ModelConfig), GRPO_DEFAULTS)}


@dataclasses.dataclass
class Toy:
    name: str = dataclasses.field(default="a", metadata={"help": "a name"})
    steps: int = 3
    rate: float = 0.1
    flag: bool = False
    seeds: list = dataclasses.field(default_factory=lambda: [0])
    api_key: str | None = None


def test_yaml_then_cli_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\nrate: 0.5\nseeds: [1, 2]\n")
    cfg = parse_config(Toy, ["--config", str(f), "--rate", "0.25", "--flag", "true", "--seeds", "3,4"])
    assert (cfg.steps, cfg.rate, cfg.flag, cfg.seeds) == (7, 0.25, True, ["3", "4"])
    assert "api_key" not in config_to_dict(load_config(Toy, overrides={"api_key": "sk-secret"}))


def test_errors_name_the_field_and_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stepz: 7\n")
    with pytest.raises(ConfigError, match=r"^stepz: unknown field in .*c.yaml"):
        load_config(Toy, f)
    with pytest.raises(ConfigError, match="^steps: cannot read 'many' as int"):
        load_config(Toy, overrides={"steps": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Toy, tmp_path / "missing.yaml")
    f.write_text("steps: 7\nsteps: 8\n")
    with pytest.raises(ConfigError, match="'steps' appears twice"):
        load_config(Toy, f)


def test_trl_fields_and_cbtgym_fields_come_from_one_parser(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("k: 6\nlearning_rate: 0.00005\nlora_r: 8\nloss_type: [sigmoid]\n")
    args, training, model = parse_args(*SCRIPTS["dpo"][:1], ["--config", str(f), "--k", "8", "--beta", "0.3"],
                                       SCRIPTS["dpo"][1])
    assert (args.k, training.learning_rate, training.beta, training.loss_type, model.lora_r) == (8, 5e-5, 0.3, ["sigmoid"], 8)
    # what the YAML leaves alone keeps the script's defaults, not TRL's (TRL: max_length 1024, seed 42)
    assert (training.max_length, training.seed, training.precompute_ref_log_probs, model.lora_dropout) == (640, 0, True, 0.0)
    assert isinstance(training, DPOConfig) and isinstance(model, ModelConfig)
    # a CLI list item in JSON is a rotating group of openings, as a nested YAML list is
    args, _, _ = parse_args(*SCRIPTS["dpo"][:1], ["--explore_prefixes", '["A", "B"]', "C"], SCRIPTS["dpo"][1])
    assert args.explore_prefixes == [["A", "B"], "C"]


def test_config_to_dict_drops_secrets_of_every_config():
    d = config_to_dict(Toy(api_key="sk-secret"), DPOConfig(output_dir="x", hub_token="hf_secret", bf16=False))
    assert d["steps"] == 3 and d["learning_rate"] == DPOConfig(output_dir="x", bf16=False).learning_rate
    text = repr(d)
    assert "sk-secret" not in text and "hf_secret" not in text
    assert not [k for k in d if any(s in k.lower() for s in ("key", "token", "secret", "password"))]


@pytest.mark.parametrize("bad, field", [
    (dict(k=1), "k"), (dict(collect_episodes=-1), "collect_episodes"), (dict(temperature=0.0), "temperature"),
    (dict(patient_ratings="sometimes"), "patient_ratings"), (dict(pairing="best"), "pairing"),
    (dict(eval_limit=-3), "eval_limit"), (dict(train_profiles="nowhere"), "train_profiles"),
    (dict(therapist_prompt="nope"), "therapist_prompt"), (dict(reward="rubrik"), "reward"), (dict(patient="bogus"), "patient"),
    (dict(scoring="episodes"), "scoring"), (dict(scoring="episode", scoring_rollouts=0), "scoring_rollouts"),
    (dict(scoring_rollouts=3), "scoring_rollouts"),
])
def test_dpo_arguments_check_names_the_field(bad, field):
    args, training, model = parse_args(*SCRIPTS["dpo"][:1], [], SCRIPTS["dpo"][1])
    args = dataclasses.replace(args, **bad)
    with pytest.raises(ConfigError, match=f"^{field}: "):
        args.check(training, model)


def test_defaults_and_every_config_validate():
    for name, (types, defaults) in SCRIPTS.items():
        parsed = parse_args(types, [], defaults)
        parsed[0].check(*parsed[1:])


def _no_gpu_flags(path: Path) -> list[str]:
    # the GPU configs ask for bf16, which TrainingArguments refuses to build on a machine without one
    import torch

    return [] if torch.cuda.is_available() or "bf16: true" not in path.read_text() else ["--bf16", "false"]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("python " in first or "accelerate launch" in first), "configs open with their launch command"
    kind = path.parent.name
    if kind == "accelerate":
        import yaml

        assert yaml.safe_load(path.read_text())["distributed_type"] in ("DEEPSPEED", "FSDP")
        return
    if kind == "benchmark":
        load_config(BenchmarkConfig, path).check()
        return
    assert kind in SCRIPTS, f"no train/{kind}.py for {path}"
    types, defaults = SCRIPTS[kind]
    parsed = parse_args(types, ["--config", str(path), *_no_gpu_flags(path)], defaults)
    if kind == "sft" and not Path(parsed[0].data).exists():
        parsed[0].data = "best-of-k"  # the teacher transcripts are written by `cbtgym simulate` first
    parsed[0].check(*parsed[1:])


def _run_script(name: str, *argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return run_tree([sys.executable, str(ROOT / "train" / f"{name}.py"), *argv], cwd=ROOT, env=env, timeout=timeout)


def test_dpo_help_lists_trl_fields_beside_cbtgym_fields():
    res = _run_script("dpo", "--help")
    assert res.returncode == 0, res.stderr
    for flag in ("--loss_type", "--precompute_ref_log_probs", "--lora_r", "--model_name_or_path", "--k", "--pairing"):
        assert flag in res.stdout


@pytest.mark.parametrize("argv, field", [
    (["--k", "1"], "k"), (["--collect_episodes", "-4"], "collect_episodes"), (["--loss_type", "sigmoidd"], "loss_type"),
    (["--config", "DUP"], "config"),
])
def test_dpo_config_errors_end_in_one_line_before_any_model_loads(tmp_path, argv, field):
    dup = tmp_path / "dup.yaml"
    dup.write_text("k: 4\nrounds: 2\nk: 6\n")
    out = tmp_path / "run"
    res = _run_script("dpo", *[str(dup) if a == "DUP" else a for a in argv], "--output_dir", str(out))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists(), "the run stopped before anything started"


def test_bootstrap_ci_covers_the_mean_and_paired_delta_sees_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.5
    d = paired_bootstrap(x, x + 0.3 + rng.normal(0, 0.05, 200))
    assert d["ci95"][0] > 0.2 and abs(d["mean"] - 0.3) < 0.05
    same = paired_bootstrap(x, x)
    assert same["ci95"] == [0.0, 0.0]


def test_dpo_episode_scoring_with_sampled_rollouts_validates():
    args, training, model = parse_args(*SCRIPTS["dpo"][:1], ["--scoring", "episode", "--scoring_rollouts", "3"],
                                       SCRIPTS["dpo"][1])
    assert (args.scoring, args.scoring_rollouts) == ("episode", 3)
    args.check(training, model)
