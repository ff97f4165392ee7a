"""Read back what an offline W&B run wrote: its ``run-<id>.wandb`` record log and its table files.

The wandb SDK has no reader for the log (wandb-core writes it); the format is LevelDB's log format
(32 KiB blocks of records with a 7-byte header: crc32, length, type) after a 7-byte file header
(``:W&B``, magic, version), each record a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is no W&B run log"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What a run logged: ``config``, ``history`` (one dict per ``log`` call), ``summary`` and its table files."""

    dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        """Top-level keys of every history row (a table's ``<key>/size`` etc. folded to ``<key>``)."""
        return {k for row in self.history for k in row}

    def table(self, key: str) -> dict[str, Any]:
        """The last ``wandb.Table`` logged under ``key`` (``{"columns": [...], "data": [[...], ...]}``)."""
        files = sorted((self.dir / "files" / "media" / "table").glob(f"{key}_*.table.json"))
        assert files, f"no table {key} in {self.dir}"
        return json.loads(files[-1].read_text())


def read_offline_run(run_dir: Path) -> OfflineRun:
    (log,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(run_dir)
    for rec in records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run.config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                name = item.nested_key[0] if item.nested_key else item.key
                row.setdefault(name, {} if len(item.nested_key) > 1 else json.loads(item.value_json))
                if len(item.nested_key) > 1:
                    row[name][item.nested_key[1]] = json.loads(item.value_json)
            run.history.append(row)
        elif kind == "summary":
            run.summary.update({_key(u): json.loads(u.value_json) for u in rec.summary.update})
    return run
