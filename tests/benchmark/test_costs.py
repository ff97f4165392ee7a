"""Token counts turned into money: the price table, its matching of models, and the cost rows of a run."""

from __future__ import annotations

import json

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.benchmark.costs import check_prices, money, price_of
from cbtgym.training.config import ConfigError

from .test_benchmark import tiny

FREE = {"input_per_1m": 0, "output_per_1m": 0}


def test_prices_are_validated_and_found_under_any_name_of_the_model():
    assert check_prices("{embedded: {input_per_1m: 0, output_per_1m: 0}}") == {"embedded": {"input_per_1m": 0.0, "output_per_1m": 0.0}}
    for bad, field in (({"m": {"input_per_1m": 1}}, "exactly"), ({"m": {"input_per_1m": -1, "output_per_1m": 1}}, "negative"),
                       ({"m": {"input_per_1m": "x", "output_per_1m": 1}}, "numbers"), ([1], "mapping")):
        with pytest.raises(ConfigError, match=f"prices: .*{field}"):
            BenchmarkConfig(prices=bad, wandb=False)
    prices = check_prices({"embedded": FREE, "meta-llama/Llama-3.1-70B-Instruct": {"input_per_1m": 0.6, "output_per_1m": 0.8},
                           "/models/Llama-3.1-8B-Instruct": {"input_per_1m": 0.1, "output_per_1m": 0.2}})
    assert price_of("embedded", prices) == prices["embedded"]
    assert price_of("openai:http://127.0.0.1:8000/v1#meta-llama/Llama-3.1-70B-Instruct", prices)["output_per_1m"] == 0.8
    assert price_of({"type": "vllm", "model": "/models/Llama-3.1-8B-Instruct"}, prices)["input_per_1m"] == 0.1
    assert price_of("hf:/somewhere/else", prices) is None
    assert money([("embedded", 10, 10), ("hf:/somewhere/else", 0, 0)], prices) == 0.0  # an unused model needs no price
    assert money([("hf:/somewhere/else", 5, 1)], prices) is None  # never a partial sum
    assert money([("/models/Llama-3.1-8B-Instruct", 2_000_000, 1_000_000)], prices) == pytest.approx(0.4)


def test_cost_rows_count_prompt_tokens_and_price_each_variant(tmp_path):
    from cbtgym.benchmark.runner import SHARED, run

    priced, unpriced = ScriptedBackend(["B"], name="priced"), ScriptedBackend(["C"], name="unpriced")
    cfg = tiny(tmp_path, variants=[{"name": "p", "prompt": "naive", "therapist": priced}, {"name": "u", "prompt": "naive", "therapist": unpriced}],
               reference="p", protocols=["stigma"], safety_judge="rules", stigma_limit=1,
               prices={"priced": {"input_per_1m": 3.0, "output_per_1m": 15.0}})
    res = run(cfg, log=lambda *_: None)
    p = res.costs["p"]
    assert p["therapist_prompt_tokens"] > 7 * 50  # 7 questions with a vignette each, counted as words here
    assert p["therapist_tokens"] == 7 and p["usd"] == pytest.approx((3 * p["therapist_prompt_tokens"] + 15 * 7) / 1e6)
    assert res.costs["u"]["usd"] is None and res.group_costs["p"]["usd"] == p["usd"]
    assert res.group_costs[SHARED]["usd"] == 0.0  # rule patient and embedded judges: no tokens to pay for
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["costs"]["p"]["usd"] == p["usd"]
    report = (tmp_path / "report.md").read_text()
    assert "therapist_prompt_tokens" in report and "| usd |" in report and "Cost `usd`" in report
