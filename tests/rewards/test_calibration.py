"""``cbtgym calibrate``: agreement metrics against hand-computed values, every kind end to end, bad input.

The label kinds run through the CLI with the embedded judges on the example files in
``rewards/calibration/examples/``; the CTRS kind runs with a scripted backend whose replies are
JSON written for each session, so the expected agreement follows from the scripted ratings.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.cli import main
from rewards.calibration import calibrate, infer_kind, load_items
from rewards.calibration.metrics import (
    balanced_accuracy, cohen_kappa, icc_2_1, label_agreement, multilabel_prf, rating_agreement, spearman,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "rewards" / "calibration" / "examples"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- metrics


def wikipedia_kappa_pairs() -> tuple[list[str], list[str]]:
    # 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no (gold/judge).
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    return [g for g, _ in pairs], [p for _, p in pairs]


def test_kappa_and_balanced_accuracy_by_hand():
    gold, pred = wikipedia_kappa_pairs()
    # observed 35/50 = 0.7; chance 0.5*0.6 + 0.5*0.4 = 0.5; kappa (0.7-0.5)/(1-0.5) = 0.4
    assert cohen_kappa(gold, pred) == pytest.approx(0.4)
    # recall yes 20/25 = 0.8, recall no 15/25 = 0.6
    assert balanced_accuracy(gold, pred) == pytest.approx(0.7)
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement 1: kappa undefined


def test_imbalanced_labels_separate_accuracy_from_balanced_accuracy_and_kappa():
    gold = ["a"] * 8 + ["b"] * 2
    m = label_agreement(gold, ["a"] * 10, ("a", "b"))  # a judge that always says "a"
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["kappa"] == pytest.approx(0.0)
    # precision a = 8/10, recall 1, F1 2*0.8/1.8; b never predicted
    assert m["per_label"]["a"] == pytest.approx({"precision": 0.8, "recall": 1.0, "f1": 1.6 / 1.8, "support": 8, "predicted": 10})
    assert m["per_label"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    assert m["confusion"]["matrix"] == [[8, 0, 0], [2, 0, 0]]


def test_unparsed_predictions_are_counted_not_scored():
    gold = ["a", "a", "b", "b"]
    m = label_agreement(gold, ["a", None, "b", "a"], ("a", "b"))
    assert (m["n"], m["scored"], m["unparsed"]) == (4, 3, 1)
    assert m["accuracy"] == pytest.approx(2 / 3)  # over the labelled three
    assert m["accuracy_all"] == pytest.approx(2 / 4)  # the unparsed one counted wrong
    assert m["confusion"]["columns"] == ["a", "b", "unparsed"]
    assert m["confusion"]["matrix"] == [[1, 0, 1], [1, 1, 0]]
    assert m["per_label"]["a"]["recall"] == pytest.approx(0.5)  # the unparsed "a" is a miss


def test_icc_2_1_on_shrout_and_fleiss_table():
    # Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; ICC(2,1) = .29 in their Table 4.
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert icc_2_1(ratings) == pytest.approx(0.29, abs=0.005)
    assert icc_2_1([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    assert icc_2_1([[3, 3]]) is None  # one target


def test_icc_punishes_an_offset_that_spearman_ignores():
    gold = [0, 2, 3, 5, 6]
    shifted = [g - 1 for g in gold]
    assert spearman(gold, shifted) == pytest.approx(1.0)
    # Two raters, judge = gold - 1: MSE = 0, MSR = 2 s^2, MSC = n/2, so ICC(2,1) = s^2 / (s^2 + 1/2).
    s2 = statistics.variance(gold)
    assert icc_2_1(list(zip(gold, shifted))) == pytest.approx(s2 / (s2 + 0.5))


def test_spearman_by_hand():
    # d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties: ranks (1.5, 1.5, 3) and (1, 2, 3); Pearson of the ranks = 0.866...
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(3 ** 0.5 / 2)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_rating_agreement_by_hand():
    m = rating_agreement([2, 4, 6, 0], [3, 4, 3, None])
    assert (m["n"], m["scored"], m["unparsed"]) == (4, 3, 1)
    assert m["mae"] == pytest.approx((1 + 0 + 3) / 3)
    assert m["exact"] == pytest.approx(1 / 3)
    assert m["within_1"] == pytest.approx(2 / 3)
    assert m["gold_mean"] == pytest.approx(4.0) and m["judge_mean"] == pytest.approx(10 / 3)


def test_multilabel_types():
    m = multilabel_prf([["abuse"], ["self_harm", "abuse"], []], [["abuse"], ["abuse"], None], ("abuse", "self_harm"))
    assert (m["scored"], m["unparsed"]) == (2, 1)
    assert m["exact"] == pytest.approx(0.5)
    assert m["per_label"]["abuse"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "predicted": 2}
    assert m["per_label"]["self_harm"]["recall"] == 0.0


# --------------------------------------------------------------------------- label kinds through the CLI


def run_cli(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "report.json"
    assert main(["calibrate", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def consistent(m: dict) -> None:
    """The summary numbers agree with the confusion matrix they came from."""
    matrix = m["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == m["n"]
    assert sum(row[-1] for row in matrix) == m["unparsed"]
    assert m["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(len(matrix))) / m["scored"])


@pytest.mark.slow
def test_acts_with_the_embedded_classifier(tmp_path, capsys):
    report = run_cli(tmp_path, "--judge", "embedded", "--data", str(EXAMPLES / "acts.jsonl"))
    assert report["kind"] == "acts" and report["lines"] == 12
    cat, typ = report["metrics"]["category"], report["metrics"]["type"]
    assert (cat["n"], cat["unparsed"]) == (12, 0)
    assert typ["n"] == 11  # one line gives only a category
    consistent(cat)
    consistent(typ)
    assert cat["accuracy"] >= 0.5  # the classifier is meant to get most categories of plain utterances right
    assert "category: confusion" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("judge", ["rules", "embedded"])
def test_crisis_detectors(tmp_path, judge):
    report = run_cli(tmp_path, "--judge", judge, "--data", str(EXAMPLES / "crisis.jsonl"), "--kind", "crisis")
    crisis, types = report["metrics"]["crisis"], report["metrics"]["types"]
    assert (crisis["n"], crisis["unparsed"]) == (8, 0)
    consistent(crisis)
    assert types["n"] == 7  # one line leaves "types" out
    assert crisis["per_label"]["no_crisis"]["precision"] >= 0.5


@pytest.mark.slow
def test_reply_checker(tmp_path):
    report = run_cli(tmp_path, "--judge", "embedded", "--data", str(EXAMPLES / "reply_check.jsonl"))
    m = report["metrics"]["appropriate"]
    assert report["kind"] == "reply_check" and (m["n"], m["unparsed"]) == (6, 0)
    consistent(m)
    assert m["accuracy"] > 0.5  # the rules catch the dismissive and stigmatising replies


def test_limit_spreads_over_the_file(tmp_path):
    report = run_cli(tmp_path, "--judge", "rules", "--data", str(EXAMPLES / "crisis.jsonl"), "--limit", "4")
    m = report["metrics"]["crisis"]
    assert m["n"] == 4 and m["per_label"]["crisis"]["support"] == 2  # two of each half, not the first four crises


# --------------------------------------------------------------------------- CTRS ratings

#: The scripted judge's rating of each example session: a phrase of the session -> its ratings.
def example_sessions() -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for x in load_items("ctrs", EXAMPLES / "ctrs.jsonl"):
        found.setdefault(x.dialogue.turns[0].text, {})[x.item] = x.rating
    return found


def scripted_ctrs(offset: int, garbled: str | None = None) -> ScriptedBackend:
    """Replies the judge's JSON with each human rating moved by ``offset``; the session that opens with ``garbled`` gets prose."""
    sessions = example_sessions()

    def reply(conv, sampling):
        prompt = conv[-1]["content"]
        opening = next(o for o in sessions if o in prompt)
        if garbled and opening.startswith(garbled):
            return "I think the therapist did fine overall."
        asked = re.findall(r'^"([a-z_]+)" \(', prompt, flags=re.MULTILINE)
        return json.dumps({k: {"quote": "", "justification": "scripted", "score": min(6, max(0, sessions[opening][k] + offset))}
                           for k in asked})

    return ScriptedBackend(reply)


def test_ctrs_ratings_against_a_scripted_judge():
    report = calibrate(scripted_ctrs(offset=1), EXAMPLES / "ctrs.jsonl", progress=False, max_attempts=1)
    assert report["kind"] == "ctrs"
    m = report["metrics"]
    assert m["sessions"] == 3 and set(m["items"]) == {"agenda", "understanding", "guided_discovery", "focus_key_cognitions"}
    gold = [x.rating for x in load_items("ctrs", EXAMPLES / "ctrs.jsonl")]  # all <= 5, so +1 never clips
    s2 = statistics.variance(gold)
    overall = m["overall"]
    assert (overall["n"], overall["unparsed"]) == (12, 0)
    assert overall["mae"] == pytest.approx(1.0) and overall["exact"] == 0.0 and overall["within_1"] == 1.0
    assert overall["spearman"] == pytest.approx(1.0)
    assert overall["icc_2_1"] == pytest.approx(s2 / (s2 + 0.5))  # see test_icc_punishes_an_offset_that_spearman_ignores
    assert all(item["n"] == 3 for item in m["items"].values())


def test_ctrs_parse_failures_are_counted():
    report = calibrate(scripted_ctrs(offset=0, garbled="You just need"), EXAMPLES / "ctrs.jsonl", progress=False, max_attempts=1)
    overall = report["metrics"]["overall"]
    assert (overall["n"], overall["scored"], overall["unparsed"]) == (12, 8, 4)  # the garbled session rates 4 items
    assert overall["mae"] == 0.0 and overall["exact"] == 1.0
    assert all(item["unparsed"] == 1 for item in report["metrics"]["items"].values())


def test_ctrs_through_the_cli_counts_an_unparseable_judge(tmp_path, capsys):
    # The "scripted" backend spec answers "I see." to everything: nothing parses, nothing is scored.
    report = run_cli(tmp_path, "--judge", "scripted", "--data", str(EXAMPLES / "ctrs.jsonl"))
    overall = report["metrics"]["overall"]
    assert (overall["scored"], overall["unparsed"]) == (0, 12)
    assert overall["icc_2_1"] is None and overall["mae"] is None
    assert "ICC(2,1)" in capsys.readouterr().out


def test_dialogue_string_and_list_give_the_same_session(tmp_path):
    turns = [{"role": "therapist", "text": "What brings you here?"}, {"role": "patient", "text": "I cannot sleep.\nIt is every night."}]
    text = "Therapist: What brings you here?\nPatient: I cannot sleep.\nIt is every night."
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialogue": d, "item": "agenda", "rating": 1} for d in (turns, text)])
    a, b = load_items("ctrs", path)
    assert a.dialogue.render() == b.dialogue.render() == "Therapist: What brings you here?\nPatient: I cannot sleep. It is every night."


# --------------------------------------------------------------------------- kinds and bad input


@pytest.mark.parametrize("name,kind", [("acts", "acts"), ("crisis", "crisis"), ("reply_check", "reply_check"), ("ctrs", "ctrs")])
def test_kind_is_told_from_the_fields(name, kind):
    assert infer_kind(EXAMPLES / f"{name}.jsonl") == kind


DIALOGUE = [{"role": "therapist", "text": "Hello."}, {"role": "patient", "text": "Hi."}]


@pytest.mark.parametrize("kind,rows,message", [
    ("acts", [{"text": "Hello.", "category": "question"}, {"text": "Hi.", "category": "questions"}], r":2: field 'category' is 'questions'"),
    ("acts", [{"text": "How do you feel?", "category": "solution", "type": "question_emotions"}], r":1: type 'question_emotions' belongs to"),
    ("acts", [{"text": "Hello."}], r":1: give field 'category'"),
    ("crisis", [{"text": "I am fine.", "crisis": "no"}], r":1: field 'crisis' must be true or false"),
    ("crisis", [{"text": "I am fine.", "crisis": False, "types": ["abuse"]}], r":1: 'crisis' is false but 'types'"),
    ("crisis", [{"text": "x", "crisis": True, "types": ["sadness"]}], r":1: field 'types' must be a list of crisis types"),
    ("reply_check", [{"stimulus": "I feel low.", "appropriate": True}], r":1: field 'reply' is missing"),
    ("ctrs", [{"dialogue": DIALOGUE, "item": "agenda", "rating": 7}], r":1: field 'rating' must be a whole number from 0 to 6"),
    ("ctrs", [{"dialogue": DIALOGUE, "item": "warmth", "rating": 3}], r":1: field 'item' is 'warmth'; use a CTRS item key"),
    ("ctrs", [{"dialogue": "T: hello\nP: hi", "item": "agenda", "rating": 3}], r":1: field 'dialogue' must start with"),
    ("ctrs", [{"dialogue": [{"role": "client", "text": "hi"}], "item": "agenda", "rating": 3}], r":1: dialogue\[0\] must be"),
    ("ctrs", [{"dialogue": [{"role": "patient", "text": "hi"}], "item": "agenda", "rating": 3}], r":1: field 'dialogue' has no therapist"),
])
def test_bad_lines_name_the_line_field_and_fix(tmp_path, capsys, kind, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        load_items(kind, path)
    # the CLI says the same in one line, before any judge is built
    assert main(["calibrate", "--judge", "embedded", "--data", str(path), "--kind", kind]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err


def test_unknown_kind_and_untellable_file(tmp_path, capsys):
    path = write_jsonl(tmp_path / "x.jsonl", [{"utterance": "Hello."}])
    assert main(["calibrate", "--judge", "rules", "--data", str(path)]) == 2
    assert "cannot tell the kind" in capsys.readouterr().err
    assert main(["calibrate", "--judge", "rules", "--data", str(path), "--kind", "satisfaction"]) == 2
    assert "unknown calibration kind 'satisfaction'" in capsys.readouterr().err
    empty = write_jsonl(tmp_path / "e.jsonl", [])
    with pytest.raises(ValueError, match="no lines"):
        load_items("acts", empty)


def test_multilabel_set_metrics_match_a_hand_computation():
    # scored items: ({a}, {a,b,c}), ({a,b}, {b}), ({}, {}); the fourth is unparsed.
    m = multilabel_prf([["a"], ["a", "b"], [], ["c"]], [["a", "b", "c"], ["b"], [], None], ("a", "b", "c"))
    assert (m["scored"], m["unparsed"]) == (3, 1)
    assert m["exact"] == pytest.approx(1 / 3) and m["any_match"] == pytest.approx(1.0)
    # 2 true positives of 4 predicted and 3 gold labels
    assert (m["micro_precision"], m["micro_recall"], m["micro_f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    # a: P 1, R 1/2; b: P 1/2, R 1; c: predicted once, never gold: F1 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
