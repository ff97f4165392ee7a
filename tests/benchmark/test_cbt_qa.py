"""The cbt_qa protocol: its metrics against known values, a scripted run with its rating sheet and resume, a tiny
embedded run."""

from __future__ import annotations

import csv
import json

import pytest

from cbtgym.benchmark import text_metrics as tm
from cbtgym.benchmark.cbt_qa import load_questions
from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.training.config import ConfigError

FIVE_PARTS = ("It makes sense that you feel this way. You could try a short walk each day. You are not alone, "
              "and you can get through this.")


def test_bleu_and_chrf_give_sacrebleus_own_example_numbers_and_identical_strings_score_max():
    # sacrebleu's README example (two reference streams): BLEU = 48.53, chrF2 = 59.73
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [["The dog bit the man.", "The dog had bit the man."], ["It was not unexpected.", "No one was surprised."],
            ["The man bit him first.", "The man had bitten the dog."]]
    corpus = tm.corpus_bleu_chrf(hyps, refs)
    assert round(corpus["bleu"], 2) == 48.53 and round(corpus["chrf"], 2) == 59.73
    same = "It sounds like you have been carrying a lot on your own."
    assert tm.sentence_bleu(same, same) == pytest.approx(100) and tm.sentence_chrf(same, same) == pytest.approx(100)
    assert tm.sentence_bleu("Completely unrelated words here.", same) < 10


def test_meteor_matches_exact_words_and_stems_without_wordnet():
    same = "the dog was running in the park"
    assert tm.meteor(same, same) > 0.99  # one chunk: only METEOR's tiny fragmentation penalty
    assert tm.meteor("dogs ran runs", "dog run running") > 0  # stems only: nothing exact in common
    # "glad" and "happy" are WordNet synonyms: without WordNet they do not match
    assert tm.meteor("I am glad", "I am happy") < tm.meteor("I am happy", "I am happy")
    assert tm.meteor("", same) == 0.0


@pytest.mark.slow
def test_bertscore_on_minilm_is_one_for_identical_text_and_lower_for_unrelated():
    same = "Try a short walk every morning."
    ident, near, far = tm.bertscore([same, "Go for a brief walk each morning.", "The invoice is overdue."], [same] * 3)
    assert ident["f1"] == pytest.approx(1.0, abs=1e-4) and ident["precision"] == pytest.approx(1.0, abs=1e-4)
    assert far["f1"] < near["f1"] < ident["f1"]


def test_question_file_loads_and_config_errors_name_the_field(tmp_path):
    items = load_questions()
    assert len(items) >= 15 and all(it["question"] and it["reference"] for it in items)
    assert [it["id"] for it in load_questions(limit=2)] == ["qa00", "qa01"]
    with pytest.raises(ConfigError, match="cbt_qa_file"):
        BenchmarkConfig(cbt_qa_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="cbt_qa_limit"):
        BenchmarkConfig(cbt_qa_limit=-1)
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"question": "Why?"}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:1: field 'reference'"):
        load_questions(bad)


def config(tmp_path, **changes):
    base = dict(output_dir=str(tmp_path), protocols=["cbt_qa"], safety_judge="rules", patient="rule", profile_limit=1,
                cbt_qa_limit=2, wandb=False)
    return BenchmarkConfig(**{**base, **changes})


@pytest.mark.slow
def test_scripted_run_scores_writes_a_blinded_sheet_and_resumes(tmp_path):
    from cbtgym.benchmark.runner import run

    models = [{"type": "scripted", "replies": [FIVE_PARTS], "name": "good"}, {"type": "scripted", "replies": ["Hello."], "name": "bare"}]
    cfg = config(tmp_path, variants=[{"name": f"v{i}", "prompt": "naive", "therapist": m} for i, m in enumerate(models)], reference="v0")
    res = run(cfg, log=lambda *_: None)
    out = res.extra["cbt_qa"]
    assert [(r["variant"], r["key"]) for r in out.rows] == [("v0", "qa00"), ("v0", "qa01"), ("v1", "qa00"), ("v1", "qa01")]
    assert out.table["v0"]["structure_count"]["mean"] >= 3 and out.table["v1"]["structure_count"]["mean"] == 0
    assert out.table["v0"]["bertscore_f1"]["mean"] > out.table["v1"]["bertscore_f1"]["mean"]
    with (tmp_path / "results.csv").open() as fh:
        assert sum(r["protocol"] == "cbt_qa" for r in csv.DictReader(fh)) == 4
    assert "## CBT-LLM questions (cbt_qa)" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["protocols"]["cbt_qa"]["corpus"]["v0"]["chrf"] > 0
    with (tmp_path / "cbt_qa" / "rating.csv").open() as fh:
        sheet = list(csv.DictReader(fh))
    with (tmp_path / "cbt_qa" / "rating_key.csv").open() as fh:
        key = {r["answer_id"]: r["variant"] for r in csv.DictReader(fh)}
    assert len(sheet) == 4 and all(r["relevance"] == r["structure"] == r["helpfulness"] == "" for r in sheet)
    assert "variant" not in sheet[0] and not any("v0" in r["answer_id"] or "v1" in r["answer_id"] for r in sheet)
    assert {(r["answer"], key[r["answer_id"]]) for r in sheet} == {(FIVE_PARTS, "v0"), ("Hello.", "v1")}
    run(cfg, log=lambda *_: None)  # resumed: nothing re-asked
    assert json.loads((tmp_path / "costs" / "v0.json").read_text())["therapist_calls"] == 1
    assert len((tmp_path / "cbt_qa" / "answers.jsonl").read_text().splitlines()) == 4


@pytest.mark.slow
def test_tiny_embedded_run_with_the_llm_structure_judge(pool, embedded_dir, tmp_path):  # noqa: F811
    """SmolLM2 answers and, as the GPU config's LLM structure judge would, judges the parts (unparsed ones counted)."""
    from cbtgym.benchmark.runner import run

    cfg = config(tmp_path, variants=[{"name": "naive", "prompt": "naive"}, {"name": "cbt_llm", "prompt": "cbt_llm"}],
                 cbt_qa_max_new_tokens=12, cbt_qa_structure_judge=f"hf:{embedded_dir}", judge_max_new_tokens=48, judge_attempts=1)
    out = run(cfg, pool=pool, log=lambda *_: None).extra["cbt_qa"]
    assert len(out.rows) == 4 and all(r["answer"] and 0 <= r["bertscore_f1"] <= 1 for r in out.rows)
    for r in out.rows:
        assert (r["structure_count"] is None) == r["structure_parse_failed"]
        assert r["structure_parse_failed"] or 0 <= r["structure_count"] <= 5
    assert sum(out.summary["structure_unparsed"].values()) == sum(r["structure_parse_failed"] for r in out.rows)
