"""Witte et al.'s in-context refinement by an expert: protocol ``refinement``.

Each run is ``refinement_exchanges`` sequential exchanges between a therapist variant and a client LLM (an
:class:`~cbtgym.patients.LLMPatient` built from the run's profile: run ``r`` meets the ``r``-th profile,
cycling, and the same run of every condition meets the same client). The session opens with the usual
therapist line and an unrated client reply. In each exchange the therapist replies, the client answers and
rates its satisfaction 0-100 (it starts at 30 and sees its earlier ratings: ``refinement_client_rating.txt``);
then, before the next exchange, the condition's feedback is made:

* ``expert``: the expert LLM reads the dialogue with three guidelines (actionable, empathetic, clear
  therapeutic goals) and writes feedback;
* ``generic``: the fixed sentence "Pay closer attention to the client's needs.";
* ``none``: no feedback.

The feedback enters the therapist's next prompt as a system message just before its reply
(``refinement_feedback_slot.txt``); only the latest feedback is shown. The first exchange has none in every
condition, so the conditions part from exchange 2 on.

Outcomes per variant and condition: satisfaction at each exchange, the last exchange's rating (``final``) and
the ``gain``, the least-squares slope of a run's ratings over its exchanges (points per exchange), each as
mean and bootstrap CI over runs. Between each two conditions, paired over runs: Wilcoxon signed-rank and
paired t test on ``final`` and on ``gain``. A rating the client fails to give is counted (``unparsed``) and
left out, never filled in; a run's gain needs two ratings.

Resumes per exchange: ``exchanges.jsonl`` holds one record per variant x condition x run x exchange
(exchange 0: the opening) with the client's state, so a killed run continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ...backends.base import Sampling
from ...envs.sessions import OPENING
from ...envs.text import to_charset
from ...jsonl import JsonlWriter, read_jsonl
from ...patients import LLMPatient, PatientState
from ...patients.base import SATISFACTION_START
from ...profiles.schema import PatientProfile
from ...transcript import Transcript
from ..analysis import mean_ci
from ..protocols import generate_for
from ..registry import ProtocolContext, ProtocolOutput
from ..variants import Variant
from .roles import Roles, chosen_variants, client_rating_template, expert_feedback_request, generic_feedback, therapist_chat
from .stats import paired_tests, slope

NAME = "refinement"
RECORDS = "exchanges.jsonl"


@dataclass(frozen=True)
class Series:
    """One run of one variant in one condition."""

    variant: Variant
    condition: str
    run: int
    profile: PatientProfile

    def key(self, exchange: int) -> str:
        return f"{self.variant.name}|{self.condition}|run{self.run}|x{exchange}"


def plan_series(ctx: ProtocolContext) -> list[Series]:
    """Every variant x condition x run; run ``r`` meets profile ``r`` (cycling) with attitude ``r`` of the config's."""
    from ..runner import ATTITUDES

    if not ctx.profiles:
        raise ValueError("refinement: no profiles to build clients from; check --profiles and --profile_limit")
    attitudes = ATTITUDES[ctx.cfg.attitudes]
    clients = [ctx.profiles[r % len(ctx.profiles)].with_attitude(attitudes[r % len(attitudes)]) for r in range(ctx.cfg.refinement_runs)]
    return [Series(v, c, r, p) for v in chosen_variants(ctx) for c in ctx.cfg.refinement_conditions for r, p in enumerate(clients)]


def replay(profile: PatientProfile, history: Sequence[dict[str, Any]]) -> Transcript:
    """The dialogue of a run's records so far, as the client saw it."""
    t = Transcript(profile.id, profile.attitude)
    for rec in history:
        t.add("therapist", rec["therapist"])
        t.add("patient", rec["client"], satisfaction=rec["satisfaction"])
    return t


def clients(cfg: Any, backend) -> tuple[LLMPatient, LLMPatient]:
    """The client that answers the opening (unrated) and the one that answers and rates each exchange."""
    sampling = Sampling(max_new_tokens=cfg.refinement_client_max_new_tokens, temperature=cfg.patient_temperature, top_p=0.95, seed=cfg.seed)
    kwargs = dict(sampling=sampling, disclosure=cfg.patient_disclosure, rating_template=client_rating_template())
    return LLMPatient(backend, rate_satisfaction=False, **kwargs), LLMPatient(backend, rate_satisfaction="turn", **kwargs)


def feedback_for(conditions: Sequence[str], transcripts: Sequence[Transcript], roles: Roles) -> list[str | None]:
    """Each run's feedback for its next exchange (one expert call for all ``expert`` runs)."""
    asked = [i for i, c in enumerate(conditions) if c == "expert"]
    expert = dict(zip(asked, roles.ask_expert([expert_feedback_request(transcripts[i]) for i in asked])))
    return [expert[i] if c == "expert" else generic_feedback() if c == "generic" else None for i, c in enumerate(conditions)]


def exchange(n: int, last: int, todo: Sequence[Series], done: dict[str, dict], ctx: ProtocolContext, roles: Roles,
             opening: LLMPatient, client: LLMPatient) -> list[dict[str, Any]]:
    """Exchange ``n`` (0: the opening) of every run in ``todo``, all batched: its records."""
    histories = [[done[s.key(j)] for j in range(n)] for s in todo]
    transcripts = [replay(s.profile, h) for s, h in zip(todo, histories)]
    states = [PatientState.from_dict(h[-1]["state"], s.profile) if h else client.new_state(s.profile) for s, h in zip(todo, histories)]
    used = [h[-1]["feedback"] if h else None for h in histories]
    if n == 0:
        therapist = [OPENING] * len(todo)
    else:
        therapist = [to_charset(t) for t in generate_for(ctx.therapists, [(s.variant.name, therapist_chat(s.variant, t, f))
                                                                         for s, t, f in zip(todo, transcripts, used)],
                                                         ctx.sampling, ctx.meter)]
    for t, text in zip(transcripts, therapist):
        t.add("therapist", text)
    replies = (opening if n == 0 else client).respond(states, transcripts)
    for t, r in zip(transcripts, replies):
        t.add("patient", to_charset(r.text), satisfaction=r.satisfaction)
    feedback = feedback_for([s.condition for s in todo], transcripts, roles) if 0 < n < last else [None] * len(todo)
    return [{"key": s.key(n), "variant": s.variant.name, "condition": s.condition, "run": s.run, "exchange": n,
             "profile_id": s.profile.id, "attitude": s.profile.attitude, "therapist": text, "feedback_used": f,
             "client": t.turns[-1].text, "satisfaction": r.satisfaction, "unparsed": r.meta.get("satisfaction_unparsed") if n else None,
             "left": r.left, "feedback": fb, "state": st.to_dict()}
            for s, t, text, f, r, fb, st in zip(todo, transcripts, therapist, used, replies, feedback, states)]


def run(ctx: ProtocolContext) -> ProtocolOutput:
    """The refinement protocol (see the module docstring); resumes from ``ctx.out_dir / exchanges.jsonl``."""
    last = ctx.cfg.refinement_exchanges
    series = plan_series(ctx)
    roles = Roles.of(ctx)
    opening, client = clients(ctx.cfg, roles.client)
    path = ctx.out_dir / RECORDS
    done = {r["key"]: r for r in read_jsonl(path)}
    wanted = {s.key(n) for s in series for n in range(last + 1)}
    with JsonlWriter(path) as out, tqdm(total=len(wanted), initial=len(wanted & done.keys()), desc=NAME, unit="exchange") as bar:
        for n in range(last + 1):
            todo = [s for s in series if s.key(n) not in done]
            if not todo:
                continue
            for rec in exchange(n, last, todo, done, ctx, roles, opening, client):
                out.write(rec)
                done[rec["key"]] = rec
            bar.update(len(todo))
    return summarise(ctx, series, done, roles.costs())


def _ratings(series: Sequence[Series], done: dict[str, dict], last: int) -> dict[tuple[str, str], list[list[int | None]]]:
    """``ratings[(variant, condition)][run]``: the run's ratings at exchanges 1..last (None: unparsed)."""
    out: dict[tuple[str, str], list[list[int | None]]] = {}
    for s in series:
        out.setdefault((s.variant.name, s.condition), []).append([done[s.key(n)]["satisfaction"] for n in range(1, last + 1)])
    return out


def summarise(ctx: ProtocolContext, series: Sequence[Series], done: dict[str, dict], costs: dict[str, int]) -> ProtocolOutput:
    """Rows, table, paired tests, report section and plot of finished runs."""
    cfg, last = ctx.cfg, ctx.cfg.refinement_exchanges
    conditions = list(cfg.refinement_conditions)
    variants = list(dict.fromkeys(s.variant.name for s in series))
    ratings = _ratings(series, done, last)
    table: dict[str, dict[str, dict]] = {}
    unparsed: dict[str, dict[str, int]] = {}
    for (v, c), runs in ratings.items():
        cells = table.setdefault(v, {})
        for n in range(1, last + 1):
            cells[f"{c}/x{n}"] = mean_ci([r[n - 1] for r in runs])
        cells[f"{c}/final"] = mean_ci([r[-1] for r in runs])
        cells[f"{c}/gain"] = mean_ci([slope(r) for r in runs])
        unparsed.setdefault(v, {})[c] = sum(x is None for r in runs for x in r)
    tests = {v: {f"{a} - {b}": {"final": paired_tests([r[-1] for r in ratings[v, a]], [r[-1] for r in ratings[v, b]]),
                                "gain": paired_tests([slope(r) for r in ratings[v, a]], [slope(r) for r in ratings[v, b]])}
                 for a, b in combinations(conditions, 2)} for v in variants}
    rows = [{"protocol": NAME, "variant": rec["variant"], "key": rec["key"], "condition": rec["condition"], "run": rec["run"],
             "exchange": rec["exchange"], "profile_id": rec["profile_id"], "attitude": rec["attitude"],
             "satisfaction": rec["satisfaction"], "rating_unparsed": rec["unparsed"] is not None,
             "feedback_words": len((rec["feedback_used"] or "").split())}
            for s in series for rec in (done[s.key(n)] for n in range(1, last + 1))]
    empty = sum(1 for s in series for n in range(1, last) if s.condition == "expert" and not done[s.key(n)]["feedback"])
    plot = plot_series(table, variants, conditions, last, ctx.out_dir / "refinement.png")
    report = report_lines(cfg, table, tests, unparsed, variants, conditions, empty, costs, plot)
    return ProtocolOutput(rows=rows, table=table, report=report, plots=[plot],
                          summary={"tests": tests, "unparsed_ratings": unparsed, "empty_expert_feedback": empty, "costs": costs,
                                   "runs": cfg.refinement_runs, "exchanges": last, "conditions": conditions})


def _fmt(cell: dict, digits: int = 1) -> str:
    if cell["mean"] is None:
        return "n/a"
    return f"{cell['mean']:.{digits}f} [{cell['ci95'][0]:.{digits}f}, {cell['ci95'][1]:.{digits}f}] (n={cell['n']})"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def report_lines(cfg: Any, table, tests, unparsed, variants, conditions, empty: int, costs: dict[str, int], plot: Path) -> list[str]:
    from ..report import _md_table

    lines = ["## Refinement by an expert (Witte et al.)", "",
             f"{cfg.refinement_runs} run(s) per variant and condition, {cfg.refinement_exchanges} exchanges each; client "
             f"`{cfg.refinement_client}` rating 0-100 from {SATISFACTION_START} (seeing its earlier ratings), expert "
             f"`{cfg.refinement_expert}`. Satisfaction: mean and bootstrap 95% CI over runs; `gain`: slope of a run's "
             "ratings over its exchanges (points per exchange). Unparsed ratings are left out and counted.", ""]
    rows = [[v, c, *[_fmt(table[v][f"{c}/x{n}"]) for n in range(1, cfg.refinement_exchanges + 1)],
             _fmt(table[v][f"{c}/final"]), _fmt(table[v][f"{c}/gain"], 2), str(unparsed[v][c])] for v in variants for c in conditions]
    lines += [_md_table(["variant", "condition", *[f"x{n}" for n in range(1, cfg.refinement_exchanges + 1)], "final", "gain",
                         "unparsed"], rows), ""]
    if len(conditions) > 1:
        lines += ["Paired over runs (same client per run): difference of means, Wilcoxon signed-rank (two-sided, zero "
                  "differences dropped) and paired t test p-values; n = runs where both conditions have the value.", ""]
        rows = [[v, pair, metric, str(t["n"]), "n/a" if t["mean_diff"] is None else f"{t['mean_diff']:+.2f}", _p(t["wilcoxon_p"]),
                 _p(t["ttest_p"]), t["note"]] for v in variants for pair, by in tests[v].items() for metric, t in by.items()]
        lines += [_md_table(["variant", "conditions", "metric", "n", "mean diff", "Wilcoxon p", "paired t p", "note"], rows), ""]
    if "expert" in conditions:
        lines.append(f"- Expert feedback left empty: {empty} time(s) (that exchange's prompt had no feedback).")
    lines += [f"- Client and expert cost: {', '.join(f'{k} {v}' for k, v in costs.items())} (this run; resumed work makes none).", ""]
    return lines


def plot_series(table, variants: Sequence[str], conditions: Sequence[str], last: int, path: Path) -> Path:
    """Satisfaction over exchanges, one panel per variant, one line per condition with its CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 3.2), squeeze=False, sharey=True)
    xs = list(range(1, last + 1))
    for ax, v in zip(axes.flat, variants):
        for c in conditions:
            cells = [table[v][f"{c}/x{n}"] for n in xs]
            pts = [(x, cell) for x, cell in zip(xs, cells) if cell["mean"] is not None]
            if not pts:
                continue
            ax.plot([x for x, _ in pts], [cell["mean"] for _, cell in pts], marker="o", label=c)
            ax.fill_between([x for x, _ in pts], [cell["ci95"][0] for _, cell in pts], [cell["ci95"][1] for _, cell in pts], alpha=0.2)
        ax.axhline(SATISFACTION_START, color="grey", lw=0.8, ls="--")
        ax.set_title(v, fontsize=9)
        ax.set_xlabel("exchange")
        ax.set_xticks(xs)
        ax.set_ylim(0, 100)
    axes.flat[0].set_ylabel("client satisfaction (0-100)")
    if axes.flat[0].get_legend_handles_labels()[0]:  # no line when every rating went unparsed
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("Refinement: satisfaction by feedback condition (mean, 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
