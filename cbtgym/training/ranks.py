"""One of several processes (``accelerate launch``, ``torchrun``): who runs which part of a resumable job.

The scripts' collection and evaluation stages are lists of items (episodes, probes) run a chunk of
``batch_size`` at a time into a resumable JSONL file. Under N processes each runs every N-th chunk of
what is left into a part file of its own (``<file>.part<i>``), then the main process appends the parts
to the file in item order and every process reads the whole file. The chunks are the ones a single
process would run (seeds are drawn per chunk), so the records are the ones a single process writes,
none twice and none lost; a killed run resumes from the file and the parts, whatever the new number of
processes. Alone (no launcher) nothing changes: records go straight into the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from ..jsonl import JsonlWriter, done_keys, read_jsonl
from ..resume import REMOVE_HINT, check_resume, sidecar_path

T = TypeVar("T")


def _state():
    """accelerate's process state; on a machine without a GPU the processes talk over gloo (MULTI_CPU)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@dataclass(frozen=True)
class Shard:
    """This process's place: ``index`` of ``count`` processes (``Shard()`` when alone)."""

    index: int = 0
    count: int = 1

    @classmethod
    def current(cls) -> "Shard":
        """From the launcher's environment (``WORLD_SIZE``); starts the process group when there are several."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        state = _state()
        if state.num_processes != world:
            # accelerate's state was set up earlier as a single process (on a CPU machine, without use_cpu)
            raise RuntimeError(f"{world} processes were launched but this one runs alone ({state.distributed_type}): "
                               "on a machine without a GPU pass --use_cpu true so the processes join over gloo")
        return cls(state.process_index, state.num_processes)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def barrier(self) -> None:
        """Wait until every process gets here (nothing to wait for when alone)."""
        if self.count > 1:
            _state().wait_for_everyone()

    def total(self, value: int | float) -> float:
        """``value`` summed over the processes (counts each process kept of its own share)."""
        if self.count == 1:
            return value
        import torch
        from accelerate.utils import reduce

        state = _state()
        return reduce(torch.tensor([float(value)], device=state.device), reduction="sum").item()

    def device(self) -> str:
        """Where this process's model goes: its local GPU, or the CPU."""
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        return str(_state().device) if self.count > 1 else "cuda"

    def part(self, path: Path) -> Path:
        """This process's part file of ``path``."""
        return path.with_name(f"{path.name}.part{self.index}")


def run_chunks(path: str | Path, settings: Mapping[str, Any], items: Sequence[T], *, key: Callable[[T], str],
               batch_size: int, work: Callable[[list[T]], Iterable[dict[str, Any]]], shard: Shard | None = None,
               record_key: str = "key", progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """The records of ``items`` in the resumable JSONL ``path``, running ``work`` on the chunks not yet there.

    Args:
        path: The resumable file (its settings sidecar is checked first: :func:`~cbtgym.resume.check_resume`).
        settings: What shapes its records.
        items: Everything the file should hold, in order.
        key: An item's key; ``work`` returns records whose ``record_key`` is that key.
        batch_size: Items per chunk.
        work: Runs one chunk, returning (or yielding) its records.
        shard: This process's place (default: alone).
        progress: Called with the number of items done (the ones already there first).

    Returns:
        The records of ``items``, in ``items`` order.
    """
    shard, path = shard or Shard(), Path(path)
    if shard.is_main:  # one process checks (and writes) the sidecar: all run with the same settings
        check_resume(path, settings, fresh_hint=REMOVE_HINT)
    shard.barrier()
    finished = done_keys(path, record_key).union(*(done_keys(p, record_key) for p in _parts(path)))
    todo = [it for it in items if key(it) not in finished]
    if progress:
        progress(len(items) - len(todo))
    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    target = path if shard.count == 1 else shard.part(path)
    shard.barrier()  # every process has read what is done before any writes more
    mine = chunks[shard.index::shard.count]
    if mine:
        if target != path:
            check_resume(target, settings, fresh_hint=REMOVE_HINT)
        with JsonlWriter(target) as writer:
            for chunk in mine:
                for record in work(chunk):
                    writer.write(record)
                if progress:
                    progress(len(chunk))
    shard.barrier()
    if shard.is_main:
        _merge_parts(path, [key(it) for it in items], record_key)
    shard.barrier()
    by_key = {r[record_key]: r for r in read_jsonl(path)}
    return [by_key[key(it)] for it in items]


def _parts(path: Path) -> list[Path]:
    """The part files of ``path`` left by any number of processes (not their sidecars)."""
    if not path.parent.exists():
        return []
    return sorted(p for p in path.parent.glob(f"{path.name}.part*") if not p.name.endswith(".settings.json"))


def _merge_parts(path: Path, order: list[str], record_key: str) -> None:
    """Append the part files' records to ``path`` in ``order`` (those not there yet), then remove the parts."""
    parts = _parts(path)
    if not parts:
        return
    have = done_keys(path, record_key)
    found = {r[record_key]: r for p in parts for r in read_jsonl(p)}
    with JsonlWriter(path) as writer:
        for k in order:
            if k in found and k not in have:
                writer.write(found[k])
    for p in parts:
        p.unlink()
        sidecar_path(p).unlink(missing_ok=True)
