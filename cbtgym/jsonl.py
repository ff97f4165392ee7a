"""Append-only JSONL files that make long jobs resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a killed writer) is skipped, other bad lines raise."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                return
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a user-written file, strictly.

    Unlike :func:`read_jsonl` (a resumable job's own output), a missing file, a torn last line or
    a line that is not a JSON object is an error naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object (got {type(obj).__name__})")
            yield n, obj


def done_keys(path: str | Path, key: str) -> set[str]:
    return {str(r[key]) for r in read_jsonl(path) if key in r}


class JsonlWriter:
    """Appends one record per line and fsyncs, so a killed job loses at most the line in flight.

    A torn last line left by a kill is cut off on open, so the file stays valid.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fh = self.path.open("a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The longest utterance (characters) a CLI command accepts in one field of an input line. A therapy
#: turn is a few hundred characters; the judges' rules and models slow down with length (a 1 MB line
#: took minutes), so a longer text is an error naming its line, not a silent cut.
MAX_UTTERANCE_CHARS = 4000


def check_utterance_lengths(path: str | Path, fields: Iterable[str], limit: int = MAX_UTTERANCE_CHARS) -> int:
    """Refuse an input file with a text field longer than ``limit`` characters; return its line count.

    Lines that are not JSON objects are left to the command's own validation (which names them).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Naming the file, line, field, its length and the limit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    fields = tuple(fields)
    count = 0
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            count += 1
            if len(line) <= limit:
                continue  # no field can be longer than its line: skip the parse
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            for f in fields:
                value = record.get(f) if isinstance(record, dict) else None
                if isinstance(value, str) and len(value) > limit:
                    raise ValueError(f"{path}:{n}: field {f!r} is {len(value)} characters; one utterance may have at "
                                     f"most {limit} (cbtgym.jsonl.MAX_UTTERANCE_CHARS): split or shorten it")
    return count
