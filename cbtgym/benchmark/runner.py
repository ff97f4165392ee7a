"""Run every protocol for every variant, resumably, then write the report: what ``train/benchmark.py`` calls.

Layout of ``output_dir``::

    sessions/<variant>.jsonl   courses/<variant>.jsonl   crisis/<variant>.jsonl   act_match/<variant>.jsonl
    <protocol>/...             (each protocol of registry.EXTRA_PROTOCOLS that ran: its own records)
    costs/<variant>.json       judge_cache.sqlite        results.csv   report.md   *.png   summary.json

A killed run restarted with the same config continues: finished episodes, course sessions,
probes and pairs are read back, not re-run, and LLM judge calls are replayed from the cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..backends.base import Sampling
from ..profiles import load_profiles
from ..rollout import EpisodeSpec
from . import protocols
from .config import BenchmarkConfig
from .judges import EpisodeJudges
from .registry import EXTRA_PROTOCOLS, ProtocolContext, runner_of
from .report import BenchmarkResults, analyse, log_wandb, write_csv, write_plots, write_report
from .variants import BackendPool, MeteredBackend, Variant, parse_variants

CORE_PROTOCOLS = ("sessions", "courses", "crisis", "act_match")
#: The costs row of what all variants share: the patient, the judges and the wall time.
SHARED = "all variants (patient, judges)"
ATTITUDES = {"both": ("active", "passive"), "active": ("active",), "passive": ("passive",)}


def backend_spec(value: Any) -> Any:
    """A backend spec from config: a string, a dict, or a JSON object given as a string on the command line."""
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    if isinstance(value, str) and value.strip().startswith("{"):
        return json.loads(value)
    return value


@dataclass
class Plan:
    """What a run will do, resolved from the config before any model loads (bad input fails here)."""

    variants: list[Variant]
    skipped: list[str]
    profiles: list[Any]
    session_specs: list[EpisodeSpec]
    course_specs: list[EpisodeSpec]
    probes: list[dict[str, Any]]
    act_pairs: list[dict[str, str]]
    protocols: tuple[str, ...]


def plan(cfg: BenchmarkConfig) -> Plan:
    """Variants, profiles, episode specs, probes and pairs of a config."""
    known = [*CORE_PROTOCOLS, *EXTRA_PROTOCOLS]
    unknown = [p for p in cfg.protocols if p not in known]
    if unknown:
        raise ValueError(f"protocols: unknown {unknown}; choose from {known}")
    if cfg.attitudes not in ATTITUDES:
        raise ValueError(f"attitudes must be one of {list(ATTITUDES)} (got {cfg.attitudes!r})")
    variants, skipped = [], []
    for v in parse_variants(cfg.variants):
        if v.available:
            variants.append(v)
        elif v.optional:
            skipped.append(f"variant `{v.name}` skipped: no adapter at {v.adapter} (train it first: {_trainer_hint(v)})")
        else:
            raise FileNotFoundError(f"variant {v.name!r}: adapter {v.adapter} does not exist (set optional: true to skip it)")
    names = [v.name for v in variants]
    if cfg.reference not in names:
        raise ValueError(f"reference {cfg.reference!r} is not among the variants that run ({names})")
    profiles = load_profiles(cfg.profiles)
    profiles = profiles[:cfg.profile_limit] if cfg.profile_limit > 0 else profiles
    attitudes = ATTITUDES[cfg.attitudes]
    seeds = [int(s) for s in cfg.seeds]
    sessions = [EpisodeSpec(s, p.id, a) for p in profiles for a in attitudes for s in seeds]
    course_profiles = profiles[:cfg.course_patients] if cfg.course_patients > 0 else profiles
    course = [EpisodeSpec(int(cfg.course_seed), p.id, a) for p in course_profiles for a in attitudes]
    probes = protocols.load_crisis_probes(tuple(cfg.crisis_types), cfg.crisis_per_type) if "crisis" in cfg.protocols else []
    pairs = []
    if "act_match" in cfg.protocols:
        pairs = protocols.load_act_pairs(cfg.act_match_file or protocols.EXAMPLE_ACT_PAIRS)
        pairs = pairs[:cfg.act_match_limit] if cfg.act_match_limit > 0 else pairs
    return Plan(variants, skipped, profiles, sessions, course, probes, pairs, tuple(cfg.protocols))


def _trainer_hint(v: Variant) -> str:
    """The script that writes this variant's adapter, when its name or folder says which (sft, dpo, grpo)."""
    text = f"{v.name} {v.adapter}".lower()
    for method in ("sft", "dpo", "grpo"):
        if method in text:
            return f"`python train/{method}.py`"
    return "with train/sft.py, train/dpo.py or train/grpo.py"


def _add_costs(path: Path, delta: dict[str, float]) -> dict[str, Any]:
    """Accumulate this run's counts into ``costs/<variant>.json`` (a resumed run adds to it)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    new = {k: round(old.get(k, 0) + v, 1) if isinstance(v, float) else old.get(k, 0) + v for k, v in delta.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=1))
    return new


def run(cfg: BenchmarkConfig, *, wandb_run: Any = None, pool: BackendPool | None = None, log=print) -> BenchmarkResults:
    """Run the benchmark described by ``cfg`` (a ``BenchmarkConfig`` of ``train/benchmark.py``) and write its outputs.

    Args:
        cfg: The config.
        wandb_run: A W&B run to log to, or None.
        pool: Backends already loaded (tests share one model); by default a new pool, closed at the end.
        log: Where progress lines go.
    """
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = plan(cfg)
    own_pool = pool is None
    pool = pool or BackendPool(hf_batch_size=cfg.hf_batch_size, prefix_cache_gb=cfg.prefix_cache_gb)
    try:
        return _run(cfg, p, out, pool, wandb_run, log)
    finally:
        if own_pool:  # also on an exception or SIGTERM turned into SystemExit: vLLM's engine process must not outlive us
            pool.close()


def _run(cfg: BenchmarkConfig, p: Plan, out: Path, pool: BackendPool, wandb_run: Any, log) -> BenchmarkResults:
    therapist_spec = backend_spec(cfg.therapist)
    log(f"[benchmark] loading judges and models for {len(p.variants)} variants (the first load takes a minute or more on a CPU)")
    judges = EpisodeJudges(
        pool, acts=backend_spec(cfg.act_labeler), at=backend_spec(cfg.at_judge), safety=backend_spec(cfg.safety_judge),
        ctrs=backend_spec(cfg.ctrs_judge), ctrs_variant=cfg.ctrs_variant,
        ctrs_max_new_tokens=cfg.ctrs_max_new_tokens, max_attempts=cfg.judge_attempts,
        max_new_tokens=cfg.judge_max_new_tokens or None,
        cache=out / "judge_cache.sqlite" if cfg.judge_cache else None)
    patient, patient_backend = _patient(cfg, pool)
    env_kwargs = dict(profiles=p.profiles, max_rounds=cfg.rounds, patient=patient, reward_fn=_rubric(judges))
    sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    summary_sampling = Sampling(max_new_tokens=cfg.summary_max_new_tokens)
    res = BenchmarkResults(variants=[v.name for v in p.variants], ctrs=judges.ctrs is not None, reference=cfg.reference,
                           bases={v.name: v.base for v in p.variants if v.base}, models=base_models(p.variants, therapist_spec))
    records: dict[str, list[dict[str, Any]]] = {k: [] for k in CORE_PROTOCOLS}
    # Every variant runs in the same batches: one therapist call per model per step, one patient call for all sessions.
    groups = model_groups(p.variants, therapist_spec)
    engines = [MeteredBackend(pool.therapist(g[0], therapist_spec)) for g in groups]
    therapists = {v.name: e for g, e in zip(groups, engines) for v in g}
    meter = protocols.TherapistMeter()
    t0, judge_before, patient_before = time.time(), judges.usage(), _calls(patient_backend)
    log(f"[benchmark] running {', '.join(p.protocols)}; each shows a progress bar")

    def done(protocol: str) -> None:
        log(f"[benchmark] {protocol} done, all variants ({time.time() - t0:.0f} s)")

    if "sessions" in p.protocols:
        records["sessions"] = protocols.run_sessions(p.variants, therapists, p.session_specs, out / "sessions", judges, sampling,
                                                     batch_size=cfg.batch_size, meter=meter, **env_kwargs)
        done("sessions")
    if "courses" in p.protocols and p.course_specs:
        course_variants = [v for v in p.variants if v.name not in set(cfg.course_skip)]
        records["courses"] = protocols.run_courses(course_variants, therapists, p.course_specs, cfg.course_sessions, out / "courses",
                                                   judges, sampling, summary_sampling, batch_size=cfg.batch_size, meter=meter,
                                                   **env_kwargs)
        done("courses")
    if "crisis" in p.protocols and p.probes:
        records["crisis"] = protocols.run_crisis_probes(p.variants, therapists, p.probes, out / "crisis", judges, sampling, meter)
        done("crisis probes")
    if "act_match" in p.protocols and p.act_pairs:
        records["act_match"] = protocols.run_act_match(p.variants, therapists, p.act_pairs, out / "act_match", judges, sampling, meter)
        done("act match")
    for name in (n for n in p.protocols if n in EXTRA_PROTOCOLS):
        (out / name).mkdir(parents=True, exist_ok=True)
        ctx = ProtocolContext(cfg, p.variants, therapists, pool, judges, sampling, meter, out / name, p.profiles, log)
        res.extra[name] = runner_of(name)(ctx)
        done(name)
    judge_after, patient_after = judges.usage(), _calls(patient_backend)
    for v in p.variants:
        res.costs[v.name] = _add_costs(out / "costs" / f"{v.name}.json", {
            "therapist_calls": meter.calls.get(v.name, 0), "therapist_prompt_tokens": meter.prompt_tokens.get(v.name, 0),
            "therapist_tokens": meter.tokens.get(v.name, 0)})
    for g, e in zip(groups, engines):
        name = "+".join(v.name for v in g)
        res.group_costs[name] = _add_costs(out / "costs" / f"group-{name}.json", {
            "therapist_calls": e.stats.calls, "therapist_prompt_tokens": e.prompt_tokens, "therapist_tokens": e.stats.completion_tokens})
    res.group_costs[SHARED] = _add_costs(out / "costs" / "shared.json", {
        "patient_calls": patient_after[0] - patient_before[0], "patient_prompt_tokens": patient_after[2] - patient_before[2],
        "patient_tokens": patient_after[1] - patient_before[1], **{k: judge_after[k] - judge_before[k] for k in judge_after},
        "wall_s": time.time() - t0})
    money_notes = _add_money(cfg, res, groups, therapist_spec, judges) if cfg.prices else []
    log(f"[benchmark] {time.time() - t0:.0f} s; therapist calls per model: "
        + ", ".join(f"{'+'.join(v.name for v in g)} {e.stats.calls}" for g, e in zip(groups, engines)))
    order = {v: i for i, v in enumerate(res.variants)}
    res.sessions, res.courses, res.crisis, res.act_match = (
        sorted(records[k], key=lambda r: order[r["variant"]]) for k in ("sessions", "courses", "crisis", "act_match"))
    res.setup = _setup_lines(cfg, p, pool, therapist_spec)
    res.notes = p.skipped + _notes(cfg, res) + money_notes
    write_outputs(res, out, wandb_run)
    return res


def model_groups(variants: Sequence[Variant], default_spec: Any) -> list[list[Variant]]:
    """Variants that speak through the same model (spec and adapter), in config order: each group shares its calls."""
    from .variants import spec_key

    groups: dict[str, list[Variant]] = {}
    for v in variants:
        spec = v.therapist if v.therapist is not None else default_spec
        groups.setdefault(f"{spec_key(spec)}+{v.adapter}", []).append(v)
    return list(groups.values())


def base_models(variants: Sequence[Variant], default_spec: Any) -> dict[str, tuple[str, str]]:
    """``{variant: (base model, treatment)}``: the model it runs on (its spec, without adapter) and what it does
    there (its prompt, and its adapter), for the course protocol's ``C(treatment) + C(model)``."""
    from .variants import spec_key

    return {v.name: (spec_key(v.therapist if v.therapist is not None else default_spec),
                     v.prompt + (f"+adapter:{v.adapter}" if v.adapter else "")) for v in variants}


def write_outputs(res: BenchmarkResults, out: Path, wandb_run: Any = None) -> dict[str, Path]:
    """results.csv, the plots, report.md, summary.json and the W&B log of finished results."""
    an = analyse(res)
    csv_path = write_csv(res, out)
    plots = write_plots(res, an, out)
    report = write_report(res, an, out, [str(x) for x in plots])
    summary = {"table": an.table, "contrasts": an.contrasts, "costs": res.costs, "group_costs": res.group_costs, "notes": res.notes,
               "mixed_effects": None if an.mixed is None else an.mixed.__dict__,
               "protocols": {name: {"table": o.table, **o.summary} for name, o in res.extra.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log_wandb(wandb_run, res, an, plots)
    return {"csv": csv_path, "report": report, **{x.stem: x for x in plots}}


def _patient(cfg: BenchmarkConfig, pool: BackendPool):
    """The simulated patient shared by all sessions: rule-based, or an LLM on a metered backend."""
    from ..patients import LLMPatient, RulePatient

    spec = backend_spec(cfg.patient)
    if spec == "rule":
        return RulePatient(), None
    backend = MeteredBackend(pool.get(spec))
    return LLMPatient.configured(backend, cfg.patient_max_new_tokens, cfg.patient_temperature, cfg.patient_ratings,
                                 cfg.seed, cfg.patient_disclosure), backend


def _rubric(judges: EpisodeJudges):
    """The env's step reward: the embedded rubric, sharing the judges' embedded act classifier and safety checks."""
    from rewards.acts import EmbeddedActClassifier
    from rewards.rubric import RubricReward
    from rewards.safety import EmbeddedCrisisDetector

    acts = judges.acts if isinstance(judges.acts, EmbeddedActClassifier) else None
    safety = (judges.detector, judges.checker) if isinstance(judges.detector, EmbeddedCrisisDetector) else None
    rubric = RubricReward(acts=acts, safety=safety)

    def reward(transcripts, profiles, done):
        judges.embedded_calls["rubric"] += 1
        return rubric(transcripts, profiles, done)

    return reward


def _calls(backend: MeteredBackend | None) -> tuple[int, int, int]:
    return (0, 0, 0) if backend is None else (backend.stats.calls, backend.stats.completion_tokens, backend.prompt_tokens)


def _add_money(cfg: BenchmarkConfig, res: BenchmarkResults, groups: Sequence[Sequence[Variant]], therapist_spec: Any,
               judges: EpisodeJudges) -> list[str]:
    """A ``usd`` entry in every cost row, from the accumulated token counts and ``cfg.prices``; returns notes."""
    from .costs import money, price_of

    def therapist(c: dict[str, Any], v: Variant) -> float | None:
        spec = v.therapist if v.therapist is not None else therapist_spec
        return money([(spec, c.get("therapist_prompt_tokens", 0), c.get("therapist_tokens", 0))], cfg.prices)

    for v in res.variants:
        res.costs[v]["usd"] = therapist(res.costs[v], next(x for g in groups for x in g if x.name == v))
    for g in groups:
        name = "+".join(v.name for v in g)
        res.group_costs[name]["usd"] = therapist(res.group_costs[name], g[0])
    shared = res.group_costs[SHARED]
    parts = [(backend_spec(cfg.patient), shared.get("patient_prompt_tokens", 0), shared.get("patient_tokens", 0))]
    judge_specs = [judges.names[role] for role in judges.llm_backends]
    judge_prices = {repr(price_of(spec, cfg.prices)) for spec in judge_specs}
    # The cost files add the LLM judges' tokens up over roles: one price must hold for all of them.
    if len(judge_prices) > 1:
        shared["usd"] = None
        return ["Shared cost has no money: the LLM judges run on models of different prices and their tokens are counted together."]
    if judge_specs:
        parts.append((judge_specs[0], shared.get("judge_llm_prompt_tokens", 0), shared.get("judge_llm_tokens", 0)))
    shared["usd"] = money(parts, cfg.prices)
    return []


def _setup_lines(cfg: BenchmarkConfig, p: Plan, pool: BackendPool, therapist_spec: Any) -> list[str]:
    judges = f"acts={cfg.act_labeler}, AT={cfg.at_judge}, safety={cfg.safety_judge}, CTRS={backend_spec(cfg.ctrs_judge) or 'none'}"
    decoding = "greedy" if cfg.temperature == 0 else f"temperature {cfg.temperature}, top_p {cfg.top_p}"
    return [
        f"therapist backend (prompt variants): `{therapist_spec}`, {decoding}, {cfg.max_new_tokens} new tokens per turn",
        f"variants: {', '.join(f'`{v.name}` ({v.prompt}' + (f' + {v.adapter}' if v.adapter else '') + ')' for v in p.variants)}",
        f"patient: `{cfg.patient}`; profiles `{cfg.profiles}` ({len(p.profiles)} used), attitudes {cfg.attitudes}, seeds {list(cfg.seeds)}, "
        f"{cfg.rounds} rounds per session: {len(p.session_specs)} sessions per variant",
        (f"courses: {len(p.course_specs)} patients x {cfg.course_sessions} sessions per variant"
         + (f" (not for {', '.join(n for n in cfg.course_skip if n in {v.name for v in p.variants})})"
            if set(cfg.course_skip) & {v.name for v in p.variants} else "")) if "courses" in p.protocols else "courses: not run",
        f"crisis probes: {len(p.probes)} ({', '.join(cfg.crisis_types)})" if p.probes else "crisis probes: not run",
        f"act match: {len(p.act_pairs)} pairs from `{cfg.act_match_file or protocols.EXAMPLE_ACT_PAIRS.name}`" if p.act_pairs else "act match: not run",
        f"judges: {judges}; embedded reward = the embedded rubric (`rewards/rubric.py`)",
    ]


def _notes(cfg: Any, res: BenchmarkResults) -> list[str]:
    notes = []
    if not res.ctrs:
        notes.append("No CTRS judge configured (`ctrs_judge`): the CTRS column is absent and the course protocol's per-session "
                     "outcome is the embedded reward, a deterministic proxy, not the CTRS.")
    if cfg.prices:
        notes.append("Cost `usd`: US$ from the configured `prices` (per million prompt and generated tokens) and the token "
                     "counts above; None where a model has no price. Embedded judges (MiniLM) and the rule patient count no tokens.")
    if cfg.patient == "rule":
        notes.append("Patient: the rule-based simulated patient (deterministic); satisfaction follows its transparent rating rule.")
    else:
        notes.append(f"Patient: an LLM (`{cfg.patient}`, temperature {cfg.patient_temperature}, {cfg.patient_max_new_tokens} tokens a "
                     "turn) prompted from the profile; the profile's deeper layers reach its prompt only when the therapist's "
                     f"questions do, and satisfaction is its own 0-100 rating ({'at the end of' if cfg.patient_ratings == 'end' else 'after each turn of'} "
                     "the session; Witte et al.).")
    return notes
