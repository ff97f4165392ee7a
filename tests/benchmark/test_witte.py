"""Witte et al.'s protocols (refinement, transcript_rating): the feedback loop, resume and statistics on
scripted roles, and one tiny run on the embedded SmolLM2."""

from __future__ import annotations

import csv
import json

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.benchmark.witte.stats import paired_tests, slope
from cbtgym.benchmark.witte.transcript_rating import EXAMPLE_SNIPPETS, load_snippets
from cbtgym.jsonl import read_jsonl
from cbtgym.training.config import ConfigError
from tests.benchmark.test_benchmark import tiny

FOLLOWS = "Following the feedback, what goes through your mind?"
REVISED = "That sounds hard; what went through your mind?"


def _last_user(conv):
    return conv[-1]["content"]


def therapist_reply(conv, _):
    """Says whether it was given feedback, so the client's rating shows whether feedback reached it."""
    return FOLLOWS if conv[-1]["role"] == "system" else "Tell me more."


def client_reply(conv, _):
    text = _last_user(conv)
    if "with this reply" in text:  # a snippet reply: the revision scores 90, a variant's 60, a patronising one is unparsed
        return "90" if REVISED in text else "60" if "Tell me more." in text else "unsure" if "hard on yourself" in text else "30"
    if "Rate how satisfied" not in text:
        return "I feel stuck."
    said = text.split("Your ratings so far:")[0]
    if FOLLOWS in said:
        return "80"
    return "I can't say" if "30 (start), 40" in text else "40"  # a second exchange without feedback: unparsed


def expert_reply(conv, _):
    return REVISED if "Rewrite that reply" in _last_user(conv) else "Ask about the thought."


#: Act labels play no part in these protocols; a scripted labeler spares the runner training the embedded one.
UNUSED_LABELER = {"type": "scripted", "replies": ["{}"], "name": "unused-labeler"}


def scripted_cfg(tmp_path, **changes):
    base = dict(act_labeler=UNUSED_LABELER, therapist=ScriptedBackend(therapist_reply, name="t"), variants=[{"name": "naive", "prompt": "naive"}],
                reference="naive", protocols=["refinement", "transcript_rating"], safety_judge="rules",
                refinement_client=ScriptedBackend(client_reply, name="c"), refinement_expert=ScriptedBackend(expert_reply, name="e"),
                refinement_exchanges=2, refinement_runs=2, patient_disclosure="free")
    base.update(changes)
    return tiny(tmp_path, **base)


def test_feedback_reaches_the_next_prompt_ratings_are_counted_not_filled_and_runs_resume(tmp_path):
    from cbtgym.benchmark.runner import run

    cfg = scripted_cfg(tmp_path)
    res = run(cfg, log=lambda *_: None)
    out = res.extra["refinement"]
    table, tests = out.table["naive"], out.summary["tests"]["naive"]
    # Exchange 1 has no feedback in any condition; from exchange 2 expert and generic feedback reach the therapist.
    for c in ("expert", "generic", "none"):
        assert table[f"{c}/x1"]["mean"] == 40 and table[f"{c}/x1"]["n"] == 2
    assert table["expert/final"]["mean"] == table["generic/final"]["mean"] == 80
    assert table["expert/gain"]["mean"] == pytest.approx(40)
    assert table["none/final"] == {"mean": None, "ci95": [None, None], "n": 0, "missing": 2}
    assert out.summary["unparsed_ratings"]["naive"] == {"expert": 0, "generic": 0, "none": 2}
    assert tests["expert - none"]["final"]["n"] == 0 and tests["expert - generic"]["final"]["note"].startswith("all differences zero")
    records = list(read_jsonl(tmp_path / "refinement" / "exchanges.jsonl"))
    used = {(r["condition"], r["exchange"]): r["feedback_used"] for r in records}
    assert used["expert", 2] == "Ask about the thought." and used["generic", 2] == "Pay closer attention to the client's needs."
    assert used["none", 2] is None and all(used[c, 1] is None for c in ("expert", "generic", "none"))
    assert all(r["unparsed"] == "I can't say" for r in records if r["satisfaction"] is None and r["exchange"] > 0)

    # The snippets: each source rated on its own, the unparsed human rating left out of its pairs.
    tr = res.extra["transcript_rating"]
    snippets = load_snippets(EXAMPLE_SNIPPETS)
    human = [client_reply([{"role": "user", "content": f"with this reply {s['therapist']}"}], None) for s in snippets]
    assert tr.table["expert_revision"]["satisfaction"]["mean"] == 90 and tr.table["naive"]["satisfaction"]["mean"] == 60
    assert tr.table["human"]["satisfaction"]["n"] == sum(h.isdigit() for h in human) == len(snippets) - 1
    assert tr.summary["counts"]["human"]["unparsed"] == 1
    assert tr.summary["tests"]["expert_revision - human"]["n"] == len(snippets) - 1

    report = (tmp_path / "report.md").read_text()
    assert "## Refinement by an expert (Witte et al.)" in report and "## Real-transcript rating (Witte et al.)" in report
    assert (tmp_path / "refinement" / "refinement.png").read_bytes()[:4] == b"\x89PNG"
    with (tmp_path / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sum(r["protocol"] == "refinement" for r in rows) == 3 * 2 * 2
    assert sum(r["protocol"] == "transcript_rating" for r in rows) == 3 * len(snippets)
    assert json.loads((tmp_path / "summary.json").read_text())["protocols"]["refinement"]["table"]["naive"]["expert/final"]["mean"] == 80

    # A run killed while writing exchange 2 continues: the missing records come back once, nothing is duplicated.
    path = tmp_path / "refinement" / "exchanges.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 3 * 2 * 3
    path.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][:20])  # four records lost, a torn line
    therapist = cfg.therapist
    calls = therapist.stats.calls
    again = run(cfg, log=lambda *_: None)
    keys = [r["key"] for r in read_jsonl(path)]
    assert len(keys) == len(set(keys)) == len(lines)
    assert therapist.stats.calls == calls + 1  # exchange 2 of the lost runs only (one batched call)
    assert again.extra["refinement"].table == out.table
    run(cfg, log=lambda *_: None)
    assert therapist.stats.calls == calls + 1 and len(list(read_jsonl(path))) == len(lines)


def test_paired_tests_leave_out_missing_units_and_say_when_no_test_is_defined():
    t = paired_tests([50, 60, None, 70, 55], [40, 45, 30, None, 52])
    assert t["n"] == 3 and t["mean_diff"] == pytest.approx((10 + 15 + 3) / 3)
    assert 0 < t["wilcoxon_p"] <= 1 and 0 < t["ttest_p"] < 1
    assert paired_tests([1, 2], [1, 2])["wilcoxon_p"] is None
    constant = paired_tests([3, 4, 5], [1, 2, 3])
    assert constant["wilcoxon_p"] is not None and constant["ttest_p"] is None and "constant" in constant["note"]
    assert paired_tests([1, None], [None, 2])["n"] == 0
    assert slope([30, None, 50]) == pytest.approx(10) and slope([None, 40]) is None


@pytest.mark.parametrize("line, message", [
    ({"id": "a", "dialogue": [{"speaker": "client", "text": "Hi."}]}, "field 'therapist'"),
    ({"id": "a", "dialogue": [{"speaker": "client", "text": "Hi."}, {"speaker": "therapist", "text": "Go on."}], "therapist": "x"}, "end with the client"),
    ({"id": "a", "dialogue": [{"speaker": "coach", "text": "Hi."}], "therapist": "x"}, r"dialogue\[0\]"),
])
def test_snippet_files_are_checked_line_by_line(tmp_path, line, message):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=rf"s.jsonl:1: .*{message}"):
        load_snippets(path)
    assert [s["id"] for s in load_snippets(EXAMPLE_SNIPPETS)] == [f"ts0{i}" for i in range(1, 7)]


def test_refinement_options_are_checked():
    with pytest.raises(ConfigError, match="refinement_conditions"):
        BenchmarkConfig(refinement_conditions=["expert", "praise"])
    with pytest.raises(ConfigError, match="refinement_variants"):
        BenchmarkConfig(refinement_variants=["nobody"])
    with pytest.raises(ConfigError, match="refinement_exchanges"):
        BenchmarkConfig(refinement_exchanges=0)
    assert "refinement" not in BenchmarkConfig().protocols and "transcript_rating" not in BenchmarkConfig().protocols


@pytest.mark.slow
def test_both_protocols_run_on_the_embedded_model(pool, tmp_path):  # noqa: F811
    from cbtgym.benchmark.runner import run

    cfg = tiny(tmp_path, variants=[{"name": "naive", "prompt": "naive"}], reference="naive", protocols=["refinement", "transcript_rating"],
               profile_limit=1, max_new_tokens=6, refinement_exchanges=2, refinement_runs=1, refinement_conditions=["expert", "none"],
               refinement_client_max_new_tokens=8, refinement_expert_max_new_tokens=8, transcript_limit=1, safety_judge="rules",
               act_labeler=UNUSED_LABELER)
    res = run(cfg, pool=pool, log=lambda *_: None)
    records = list(read_jsonl(tmp_path / "refinement" / "exchanges.jsonl"))
    assert len(records) == 2 * 3
    for r in records:
        if r["exchange"] > 0:
            assert (r["satisfaction"] is None) != (r["unparsed"] is None)
            assert r["satisfaction"] is None or 0 <= r["satisfaction"] <= 100
    expert_x1 = next(r for r in records if r["condition"] == "expert" and r["exchange"] == 1)
    assert isinstance(expert_x1["feedback"], str)
    assert next(r for r in records if r["condition"] == "expert" and r["exchange"] == 2)["feedback_used"] == (expert_x1["feedback"] or None)
    tr = res.extra["transcript_rating"]
    assert {r["source"] for r in tr.rows} == {"human", "expert_revision", "llm:naive"} and len(tr.rows) == 3
    assert tr.summary["costs"]["client_calls"] == 1 and tr.summary["costs"]["expert_calls"] == 1
    report = (tmp_path / "report.md").read_text()
    assert "## Refinement by an expert" in report and "## Real-transcript rating" in report
