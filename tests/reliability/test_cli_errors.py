"""The CLI bounds what it reads and ends every config, backend or path error in one line, exit code 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cbtgym.cli import main
from cbtgym.jsonl import MAX_UTTERANCE_CHARS

MEGABYTE_LINE = "I feel low. " * (1_000_000 // 12)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line_error(capsys, *parts: str) -> str:
    """The error: the last line on stderr, after any progress lines, with no traceback anywhere."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("cbtgym ") and ": error: " in last, err
    for part in parts:
        assert part in last, f"{part!r} not in {last!r}"
    return last


@pytest.mark.parametrize("command, row, field", [
    ("safety", {"patient": MEGABYTE_LINE}, "'patient'"),
    ("safety", {"patient": "Fine.", "therapist": MEGABYTE_LINE}, "'therapist'"),
    ("label", {"text": MEGABYTE_LINE}, "'text'"),
    ("label", {"text": "How was it?", "context": MEGABYTE_LINE}, "'context'"),
])
def test_a_megabyte_line_is_refused_in_seconds_naming_line_and_field(tmp_path, capsys, command, row, field):
    src = write_jsonl(tmp_path / "in.jsonl", [{"patient": "Fine.", "text": "Hello."}, row])
    out = tmp_path / "out.jsonl"
    start = time.monotonic()
    assert main([command, "--in", str(src), "--out", str(out), "--judge", "rules" if command == "safety" else "embedded"]) == 2
    assert time.monotonic() - start < 5
    one_line_error(capsys, "in.jsonl:2", field, str(MAX_UTTERANCE_CHARS))
    assert not out.exists()


def test_safety_in_chunks_gives_the_same_file_as_one_batch(tmp_path, capsys, monkeypatch):
    import cbtgym.cli as cli
    from rewards.factory import make_judge
    from rewards.safety import safety_file

    rows = [{"patient": p, "therapist": t, "id": i} for i, (p, t) in enumerate([
        ("I want to end my life.", "Let's talk about your homework."),
        ("Work was fine.", "What went through your mind?"),
        ("I have pills saved up.", None),
    ] * 3)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    detector = make_judge("crisis", "rules")
    checker = make_judge("reply_check", "rules", detector=detector)
    safety_file(src, tmp_path / "one.jsonl", detector, checker)
    monkeypatch.setattr(cli, "CHUNK_LINES", 2)
    assert main(["safety", "--in", str(src), "--out", str(tmp_path / "chunked.jsonl"), "--judge", "rules"]) == 0
    assert (tmp_path / "chunked.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert "9 lines:" in capsys.readouterr().err


@pytest.mark.parametrize("argv, parts", [
    (["safety", "--in", "missing.jsonl", "--out", "o.jsonl"], ["missing.jsonl", "not found"]),
    (["validate-profiles", "no/such/dir"], ["no/such/dir", "does not exist"]),
    (["simulate", "--therapist-backend", "nonsense", "--episodes", "1", "--reward", "placeholder", "--out", "{tmp}/e.jsonl"],
     ["unknown backend spec 'nonsense'"]),
    (["simulate", "--therapist-backend", "openai:http://127.0.0.1:9/v1#m", "--episodes", "1", "--rounds", "1",
      "--reward", "placeholder", "--out", "{tmp}/e.jsonl"], ["openai:http://127.0.0.1:9/v1#m", "failed after"]),
    (["simulate", "--therapist-backend", "scripted", "--profiles", "{tmp}/dup.yaml", "--out", "{tmp}/e.jsonl"],
     ["dup.yaml", "'situation'", "twice"]),
    (["simulate", "--therapist-backend", "scripted", "--reward", "composite:{tmp}/nope.yaml", "--episodes", "1",
      "--out", "{tmp}/e.jsonl"], ["nope.yaml"]),
])
def test_config_backend_and_path_errors_end_in_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, parts):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dup.yaml").write_text("- id: a\n  situation: one\n  situation: two\n", encoding="utf-8")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    import cbtgym.backends.openai_http as http

    monkeypatch.setattr(http.OpenAIBackend.__init__, "__kwdefaults__",
                        {**http.OpenAIBackend.__init__.__kwdefaults__, "max_retries": 0, "timeout": 2})
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    one_line_error(capsys, *parts)
