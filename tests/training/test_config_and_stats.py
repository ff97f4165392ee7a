import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from cbtgym.training.config import ConfigError, config_to_dict, load_config, parse_config
from cbtgym.training.stats import bootstrap_ci, paired_bootstrap

ROOT = Path(__file__).resolve().parents[2]


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
    with pytest.raises(ConfigError, match=r"c.yaml: unknown field 'stepz'; valid fields: .*steps"):
        load_config(Toy, f)
    with pytest.raises(ConfigError, match="field 'steps': cannot read 'many' as int"):
        load_config(Toy, overrides={"steps": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Toy, tmp_path / "missing.yaml")


def _script_config_classes():
    import importlib.util

    out = {}
    for name in ("dpo", "sft", "grpo", "benchmark"):
        path = ROOT / "train" / f"{name}.py"
        if not path.exists():
            continue
        spec = importlib.util.spec_from_file_location(f"train_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
        spec.loader.exec_module(mod)
        out[name] = next(v for k, v in vars(mod).items() if k.endswith("Config") and dataclasses.is_dataclass(v)
                         and v.__module__ == mod.__name__)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_loads_and_validates(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("python " in first or "accelerate launch" in first), "configs open with their launch command"
    if path.parent.name == "accelerate":
        import yaml

        assert yaml.safe_load(path.read_text())["distributed_type"] in ("DEEPSPEED", "FSDP")
        return
    classes = _script_config_classes()
    assert path.parent.name in classes, f"no train/{path.parent.name}.py for {path}"
    load_config(classes[path.parent.name], path)


def test_bootstrap_ci_covers_the_mean_and_paired_delta_sees_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.5
    d = paired_bootstrap(x, x + 0.3 + rng.normal(0, 0.05, 200))
    assert d["ci95"][0] > 0.2 and abs(d["mean"] - 0.3) < 0.05
    same = paired_bootstrap(x, x)
    assert same["ci95"] == [0.0, 0.0]
