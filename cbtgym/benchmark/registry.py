"""Benchmark protocols beyond the four built into the runner: each lives in its own module and is named here.

A protocol is a function ``run(ctx: ProtocolContext) -> ProtocolOutput``. It gets what every protocol
shares (the config, the variants with their metered therapists, the backend pool, the judges, the
decoding, its own output folder) and returns what the report writes: rows for ``results.csv``, a
per-variant table for ``summary.json`` and W&B, the markdown lines of its ``report.md`` section and
its plots. It must resume from ``ctx.out_dir``: what is written there is read back, not re-run.

Adding one: write ``cbtgym/benchmark/<name>.py`` with its ``run``, add ``"<name>": "<module>:run"`` to
:data:`EXTRA_PROTOCOLS`, its options to :class:`~cbtgym.benchmark.config.BenchmarkConfig`. Modules are
imported only when their protocol runs, so an unused protocol costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from ..backends.base import Backend, Sampling
    from .judges import EpisodeJudges
    from .protocols import TherapistMeter
    from .variants import BackendPool, Variant

#: Protocol name -> ``"module:function"`` of its runner (imported on use).
EXTRA_PROTOCOLS: dict[str, str] = {
    "refinement": "cbtgym.benchmark.witte.refinement:run",
    "transcript_rating": "cbtgym.benchmark.witte.transcript_rating:run",
    "distortions": "cbtgym.benchmark.distortions:run",
    "stigma": "cbtgym.benchmark.stigma:run",
    "cbt_qa": "cbtgym.benchmark.cbt_qa:run",
}


@dataclass
class ProtocolContext:
    """What a protocol runs with.

    Attributes:
        cfg: The run's :class:`~cbtgym.benchmark.config.BenchmarkConfig`.
        variants: The therapist variants that run, in config order.
        therapists: ``therapists[variant name]``: its (metered) backend; variants sharing a model share one.
        pool: Builds any other backend spec once per run (client LLMs, experts): ``pool.get(spec)``.
        judges: The run's episode judges (acts, AT, safety, CTRS when configured).
        sampling: The therapist's decoding.
        meter: Counts therapist calls and tokens per variant; pass it to
            :func:`~cbtgym.benchmark.protocols.generate_for`.
        out_dir: This protocol's folder (``<output_dir>/<name>``), created.
        profiles: The run's profiles.
        log: Where progress lines go.
    """

    cfg: Any
    variants: Sequence["Variant"]
    therapists: Mapping[str, "Backend"]
    pool: "BackendPool"
    judges: "EpisodeJudges"
    sampling: "Sampling"
    meter: "TherapistMeter"
    out_dir: Path
    profiles: Sequence[Any]
    log: Callable[[str], None] = print


@dataclass
class ProtocolOutput:
    """What a protocol hands to the report.

    Attributes:
        rows: ``results.csv`` rows, one dict each, with at least ``protocol`` and ``variant``.
        table: ``table[variant][metric]``: a :func:`~cbtgym.benchmark.analysis.mean_ci` cell
            (``summary.json`` and W&B ``<protocol>/<variant>/<metric>``).
        report: Markdown lines of its ``report.md`` section, starting with a ``## `` heading.
        plots: PNG files it wrote (linked from report.md, logged to W&B).
        summary: Anything else for ``summary.json`` (tests, contrasts), JSON-serialisable.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    table: dict[str, dict[str, dict]] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def runner_of(name: str) -> Callable[[ProtocolContext], ProtocolOutput]:
    """The ``run`` function of protocol ``name`` (one of :data:`EXTRA_PROTOCOLS`)."""
    if name not in EXTRA_PROTOCOLS:
        raise ValueError(f"protocols: unknown protocol {name!r}; registered: {sorted(EXTRA_PROTOCOLS)}")
    module, _, func = EXTRA_PROTOCOLS[name].partition(":")
    return getattr(importlib.import_module(module), func)
