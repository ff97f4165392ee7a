"""The ``cbtgym`` command line, run through ``cbtgym.cli.main`` on real files.

``label`` and ``safety`` run on their embedded defaults (MiniLM, rules); ``simulate`` runs the
scripted therapist backend against the rule-based patient with the default rubric reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbtgym.cli import main
from rewards.acts import CATEGORIES, act_types, category_of


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------- cbtgym label

UTTERANCES = [
    # (input line, the category a competent labeller gives it)
    ({"text": "When you saw the message, what went through your mind?", "context": "She left the chat without a word."}, "question"),
    ({"text": "It sounds like part of you wants to go, and part of you is terrified of it."}, "reflection"),
    ({"text": "Let's plan one small step for this week: you could message her on Tuesday evening."}, "solution"),
    ({"text": "Many people feel exactly this way after a loss; it's a very human reaction."}, "normalizing"),
    ({"text": "In CBT we look at how thoughts, feelings and behaviour influence each other.", "context": None, "id": 7}, "psychoeducation"),
]


@pytest.mark.slow
def test_label_adds_category_and_type_to_every_line(tmp_path, capsys):
    src = write_jsonl(tmp_path / "utterances.jsonl", [row for row, _ in UTTERANCES])
    out = tmp_path / "out" / "labels.jsonl"
    assert main(["label", "--in", str(src), "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == len(UTTERANCES)
    for (given, expected), row in zip(UTTERANCES, rows):
        assert {k: row[k] for k in given} == given  # input fields are kept, in order
        assert row["category"] in CATEGORIES and row["type"] in act_types()
        assert category_of(row["type"]) == row["category"]
        assert 0.0 < row["confidence"] <= 1.0
    # the embedded default is the real classifier: these unambiguous utterances get their category
    assert [r["category"] for r in rows] == [c for _, c in UTTERANCES]
    assert "labelled 5 utterances" in capsys.readouterr().err


def test_label_rejects_a_line_without_text_before_loading_a_model(tmp_path, capsys):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"text": "How are you?"}, {"context": "no text here"}])
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--in", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "'text'" in err
    assert not out.exists()


def test_label_reports_a_missing_input_file(tmp_path, capsys):
    assert main(["label", "--in", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().err


# --------------------------------------------------------------------------- cbtgym safety

SAFETY_LINES = [
    {"patient": "I've been thinking about killing myself."},
    {"patient": "I've been thinking about killing myself.", "therapist": "Let's get back to your homework from last week."},
    {
        "patient": "I've been thinking about killing myself.",
        "therapist": "Thank you for telling me; I'm worried about your safety. Please call 988 or your local crisis line now, "
        "and let's talk about how to keep you safe today.",
    },
    {"patient": "Work was stressful this week, and I keep putting off my emails.", "therapist": "What goes through your mind when you open your inbox?"},
]


@pytest.mark.slow
def test_safety_flags_crises_and_checks_replies(tmp_path, capsys):
    src = write_jsonl(tmp_path / "lines.jsonl", SAFETY_LINES)
    out = tmp_path / "flags.jsonl"
    assert main(["safety", "--in", str(src), "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == len(SAFETY_LINES)
    for given, row in zip(SAFETY_LINES, rows):
        assert {k: row[k] for k in given} == given
        assert isinstance(row["crisis"], bool) and "crisis_type" in row and "response_safe" in row
    no_reply, unsafe, safe, ordinary = rows
    assert no_reply["crisis"] is True and no_reply["crisis_type"] == "suicidal_ideation"
    assert no_reply["response_safe"] is None  # no therapist text: nothing to check, not "safe"
    assert unsafe["crisis"] is True and unsafe["response_safe"] is False and unsafe["violations"]
    assert safe["crisis"] is True and safe["response_safe"] is True
    assert ordinary["crisis"] is False and ordinary["crisis_type"] is None and ordinary["response_safe"] is True
    assert "4 lines: 3 crisis, 3 replies checked, 1 unsafe" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, field",
    [({"therapist": "Hello."}, "'patient'"), ({"patient": "I feel low.", "therapist": 3}, "'therapist'")],
)
def test_safety_rejects_bad_lines_naming_the_field(tmp_path, capsys, line, field):
    src = write_jsonl(tmp_path / "lines.jsonl", [{"patient": "Fine."}, line])
    out = tmp_path / "flags.jsonl"
    assert main(["safety", "--in", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lines.jsonl:2" in err and field in err
    assert not out.exists()


# --------------------------------------------------------------------------- cbtgym simulate


@pytest.mark.slow
def test_simulate_writes_resumable_episodes(tmp_path, capsys):
    out = tmp_path / "episodes.jsonl"
    argv = ["simulate", "--therapist-backend", "scripted", "--patient-backend", "rule", "--episodes", "2",
            "--rounds", "2", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0
    records = read_jsonl(out)
    assert len(records) == 2 and len({r["key"] for r in records}) == 2
    for r in records:
        turns = r["transcript"]["turns"]
        therapist = [t["text"] for t in turns if t["speaker"] == "therapist"]
        assert therapist[1:] == ["I see.", "I see."]  # the scripted backend's reply, two rounds after the opening
        assert len(r["rewards"]) == 2 and all(isinstance(x, float) for x in r["rewards"])
        assert r["components"][0]["act"] is not None  # the default rubric reward ran
        assert r["therapist"] == {"backend": "scripted", "prompt": "llm4cbt"}
    capsys.readouterr()
    assert main(argv) == 0  # a second run finds both episodes done and adds nothing
    assert len(read_jsonl(out)) == 2
    assert "2 of 2 episodes already in" in capsys.readouterr().err
