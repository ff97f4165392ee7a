"""run_chunks under several processes (threads with a real barrier stand in for them: the test is about who
writes what): the same records as one process, in item order, none twice; a kill mid-way resumes under another
number of processes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from cbtgym.jsonl import read_jsonl
from cbtgym.training.ranks import Shard, run_chunks

ITEMS = [f"ep{i:02d}" for i in range(11)]
SETTINGS = {"policy": "scripted", "rounds": 2}


@dataclass(frozen=True)
class ThreadShard(Shard):
    gate: threading.Barrier = field(default=None, compare=False)

    def barrier(self) -> None:
        self.gate.wait(timeout=30)


def work_log(log: list, fail_after: int | None = None):
    def work(chunk):
        if fail_after is not None and len(log) >= fail_after:
            raise KeyboardInterrupt("killed")
        log.append(list(chunk))
        return [{"key": k, "value": len(k) * 2, "chunk": chunk[0]} for k in chunk]
    return work


def run_processes(path, n: int, logs: list[list], fail_after=None):
    gate = threading.Barrier(n)
    results, errors = [None] * n, []

    def one(i):
        try:
            results[i] = run_chunks(path, SETTINGS, ITEMS, key=lambda k: k, batch_size=3,
                                    work=work_log(logs[i], fail_after), shard=ThreadShard(i, n, gate))
        except BaseException as e:  # noqa: BLE001 - a killed process
            errors.append(e)
            gate.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_two_processes_write_what_one_writes(tmp_path):
    alone_log: list = []
    alone = run_chunks(tmp_path / "alone.jsonl", SETTINGS, ITEMS, key=lambda k: k, batch_size=3, work=work_log(alone_log))
    logs = [[], []]
    results, errors = run_processes(tmp_path / "two.jsonl", 2, logs)
    assert not errors
    assert results[0] == results[1] == alone
    assert list(read_jsonl(tmp_path / "two.jsonl")) == list(read_jsonl(tmp_path / "alone.jsonl"))
    # the same chunks as alone, dealt out in turn: none run twice
    assert logs[0] == alone_log[0::2] and logs[1] == alone_log[1::2]
    assert not list(tmp_path.glob("two.jsonl.part*")), "parts are merged and removed"


def test_a_killed_run_resumes_under_another_number_of_processes(tmp_path):
    path = tmp_path / "eps.jsonl"
    logs = [[], [], []]
    _, errors = run_processes(path, 3, logs, fail_after=1)  # each process finishes one chunk, then dies
    assert errors
    parts = sorted(p.name for p in tmp_path.glob("eps.jsonl.part?"))
    assert parts == ["eps.jsonl.part0", "eps.jsonl.part1", "eps.jsonl.part2"]
    done_first = [k for log in logs for chunk in log for k in chunk]
    logs2 = [[], []]
    results, errors = run_processes(path, 2, logs2)
    assert not errors
    again = [k for log in logs2 for chunk in log for k in chunk]
    assert not set(again) & set(done_first), "finished chunks in the parts are not run again"
    assert sorted(done_first + again) == ITEMS
    assert [r["key"] for r in read_jsonl(path)] == ITEMS and results[0] == results[1]


def test_other_settings_refuse_to_resume(tmp_path):
    path = tmp_path / "eps.jsonl"
    run_chunks(path, SETTINGS, ITEMS[:3], key=lambda k: k, batch_size=3, work=work_log([]))
    with pytest.raises(ValueError, match="rounds"):
        run_chunks(path, {**SETTINGS, "rounds": 3}, ITEMS, key=lambda k: k, batch_size=3, work=work_log([]))
