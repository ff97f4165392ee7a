"""What a benchmark writes: ``report.md``, ``results.csv`` (one row per episode), PNG plots and W&B logs.

Everything here reads :class:`BenchmarkResults`; nothing runs a model.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rewards.acts.taxonomy import CATEGORIES, act_types, category_of

from . import analysis
from .registry import ProtocolOutput

Getter = Callable[[dict[str, Any]], Any]
RUBRIC_ITEMS = ("act", "structure", "at_progress", "satisfaction", "safety_ok", "episode_at")


def _metric(key: str) -> Getter:
    return lambda r: r["metrics"].get(key)


#: The session metrics: key -> (label, getter, what it is).
SESSION_METRICS: dict[str, tuple[str, Getter, str]] = {
    "reward": ("embedded reward", lambda r: r["reward"], "sum of the embedded rubric's step rewards (a proxy, not the CTRS)"),
    "at_similarity": ("AT similarity", _metric("at_similarity"), "best cosine between a patient turn and the ground-truth automatic thought"),
    "at_recovered": ("AT recovered", _metric("at_recovered"), "share of sessions whose automatic thought came out (embedding threshold, or the LLM verdict)"),
    "at_reached": ("AT reached", _metric("at_reached"), "share of sessions whose therapist questions reached the automatic-thought layer (it entered the patient's prompt)"),
    "question_share": ("questions", _metric("question_share"), "share of therapist turns labelled as questions"),
    "solution_share": ("solutions", _metric("solution_share"), "share of therapist turns labelled as solutions"),
    "satisfaction_final": ("satisfaction", _metric("satisfaction_final"), "the patient's last 0-100 rating (start 30)"),
    "safety_pass": ("safety pass", _metric("safety_pass"), "sessions with a crisis turn whose every reply to it was safe"),
    "ctrs": ("CTRS", _metric("ctrs"), "mean of the applicable CTRS items, 0-6, by the configured judge"),
}


@dataclass
class BenchmarkResults:
    """Everything a run produced, in the order of its variants.

    Attributes:
        variants: Names of the variants that ran, in config order.
        sessions / courses / crisis / act_match: The records of each protocol (all variants).
        costs: ``costs[variant]``: the therapist calls it took part in and the tokens it generated.
        group_costs: ``group_costs["a+b"]``: therapist calls and tokens per group of variants sharing a
            model (their calls are shared), and one row for what all variants share (patient and judge
            calls and tokens, wall time).
        setup: Lines describing the run (models, patient, judges, profiles, seeds).
        notes: Things the reader must know (skipped variants, proxies standing in).
        bases: ``{variant: base}`` for paired contrasts.
        ctrs: Whether a CTRS judge was configured.
        reference: Reference variant of the mixed-effects model.
        extra: ``extra[protocol]``: the output of each registered protocol that ran (``registry.py``).
        models: ``{variant: (base model, treatment)}``: with several base models the mixed model
            separates the two (:func:`~cbtgym.benchmark.analysis.mixed_effects`).
    """

    variants: list[str]
    sessions: list[dict[str, Any]] = field(default_factory=list)
    courses: list[dict[str, Any]] = field(default_factory=list)
    crisis: list[dict[str, Any]] = field(default_factory=list)
    act_match: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bases: dict[str, str] = field(default_factory=dict)
    ctrs: bool = False
    reference: str = ""
    extra: dict[str, ProtocolOutput] = field(default_factory=dict)
    models: dict[str, tuple[str, str]] = field(default_factory=dict)

    def session_metrics(self) -> dict[str, tuple[str, Getter, str]]:
        return {k: v for k, v in SESSION_METRICS.items() if k != "ctrs" or self.ctrs}

    def course_response(self) -> tuple[str, Getter]:
        """The per-session outcome of the course protocol: the CTRS when configured, else the embedded reward."""
        return ("CTRS", _metric("ctrs")) if self.ctrs else ("embedded reward", lambda r: r["reward"])


@dataclass
class Analysis:
    """The numbers of a report, computed once and shared by report.md, the plots and W&B."""

    table: dict[str, dict[str, dict]]
    contrasts: dict[str, dict[str, dict]]
    acts: dict[str, dict[str, float]]
    human_acts: dict[str, float]
    items: dict[str, dict[str, dict]]
    course_table: dict[str, dict[int, dict]]
    mixed: analysis.MixedEffects | None
    crisis_by_type: dict[str, dict[str, dict]]


SUMMARY_COLUMNS = {
    "crisis_pass": ("crisis probes pass", "share of crisis probes answered safely (Moore et al.)"),
    "act_category_match": ("act match (category)", "reply's act category = the human therapist's (5 + oov)"),
    "act_type_match": ("act match (type)", "reply's act type = the human therapist's (13 + oov)"),
    "course_total": ("course total", "mean per-session outcome over the course sessions"),
}


def analyse(res: BenchmarkResults) -> Analysis:
    """Tables, contrasts, distributions and the mixed model of a run."""
    order = res.variants
    metrics = {k: g for k, (_, g, _) in res.session_metrics().items()}
    table = analysis.metric_table(res.sessions, metrics, order)
    for v in order:
        table[v]["crisis_pass"] = analysis.mean_ci([r["pass"] for r in res.crisis if r["variant"] == v])
        table[v]["act_category_match"] = analysis.mean_ci([r["category_match"] for r in res.act_match if r["variant"] == v])
        table[v]["act_type_match"] = analysis.mean_ci([r["type_match"] for r in res.act_match if r["variant"] == v])
        _, response = res.course_response()
        table[v]["course_total"] = analysis.mean_ci([response(r) for r in res.courses if r["variant"] == v])
    contrasts = {v: analysis.paired_contrast(res.sessions, v, b, metrics) for v, b in res.bases.items() if v in order and b in order}
    labels = list(act_types())
    acts = analysis.act_distribution(res.sessions, order, labels)
    human = [r["human_type"] for r in res.act_match if r["variant"] == (order[0] if order else None)]
    human_acts = {lab: human.count(lab) / len(human) for lab in labels} if human else {}
    if res.ctrs:
        keys = sorted({k[5:] for r in res.sessions for k in r["metrics"] if k.startswith("ctrs_") and k != "ctrs_parse_failed"})
        item_getters = {k: _metric(f"ctrs_{k}") for k in keys}
    else:
        item_getters = {k: (lambda r, k=k: r["items"].get(k)) for k in RUBRIC_ITEMS}
    items = analysis.metric_table(res.sessions, item_getters, order)
    name, response = res.course_response()
    course_table = analysis.per_session_means(res.courses, response, order) if res.courses else {}
    mixed = analysis.mixed_effects(analysis.course_rows(res.courses, response, res.models), res.reference or order[0]) if res.courses else None
    crisis_by_type: dict[str, dict[str, dict]] = {}
    for v in order:
        types = sorted({r["probe_type"] for r in res.crisis})
        crisis_by_type[v] = {t: analysis.mean_ci([r["pass"] for r in res.crisis if r["variant"] == v and r["probe_type"] == t]) for t in types}
    return Analysis(table, contrasts, acts, human_acts, items, course_table, mixed, crisis_by_type)


# -- formatting --------------------------------------------------------------------------------

def fmt(cell: dict[str, Any], n_expected: int | None = None, digits: int = 2) -> str:
    """``mean [lo, hi]``, with ``(n=k)`` when values were missing; ``n/a`` without any value."""
    if cell.get("mean") is None:
        return "n/a"
    lo, hi = cell["ci95"]
    text = f"{cell['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    if cell.get("missing") or (n_expected is not None and cell.get("n") != n_expected):
        text += f" (n={cell['n']})"
    return text


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(res: BenchmarkResults, an: Analysis, out_dir: Path, plots: Sequence[str]) -> Path:
    """``report.md``: setup, the main table, contrasts, acts, courses with the mixed model, probes, cost."""
    order = res.variants
    metrics = res.session_metrics()
    summary_cols = [c for c in SUMMARY_COLUMNS if any(an.table[v][c]["n"] for v in order)]
    parts = ["# cbtgym benchmark", "", *[f"- {line}" for line in res.setup], ""]
    if res.notes:
        parts += ["**Notes**", "", *[f"- {n}" for n in res.notes], ""]
    parts += ["## Results (mean [95% bootstrap CI])", ""]
    header = ["variant"] + [metrics[m][0] for m in metrics] + [SUMMARY_COLUMNS[c][0] for c in summary_cols]
    rows = []
    for v in order:
        n_eps = sum(r["variant"] == v for r in res.sessions)
        rows.append([v] + [fmt(an.table[v][m], n_eps) for m in metrics] + [fmt(an.table[v][c]) for c in summary_cols])
    parts += [_md_table(header, rows), ""]
    parts += [f"- **{metrics[m][0]}**: {metrics[m][2]}" for m in metrics]
    parts += [f"- **{SUMMARY_COLUMNS[c][0]}**: {SUMMARY_COLUMNS[c][1]}" for c in summary_cols]
    parts += ["", "(n=k): k values in the mean; the others were not applicable or could not be scored.", ""]
    if an.contrasts:
        parts += ["## Checkpoints against their base (paired over the same episodes; difference [95% CI])", ""]
        rows = [[f"{v} - {res.bases[v]}"] + [fmt(c[m]) for m in metrics] for v, c in an.contrasts.items()]
        parts += [_md_table(["contrast"] + [metrics[m][0] for m in metrics], rows), ""]
    parts += ["## Act labels of therapist turns (share of turns)", ""]
    cats = {c: [t for t in act_types() if category_of(t) == c] for c in CATEGORIES}
    rows = [[v] + [f"{sum(an.acts[v].get(t, 0.0) for t in ts):.2f}" for ts in cats.values()] for v in order]
    if an.human_acts:
        rows.append(["human therapists (act-match file)"] + [f"{sum(an.human_acts.get(t, 0.0) for t in ts):.2f}" for ts in cats.values()])
    parts += [_md_table(["variant", *CATEGORIES], rows), ""]
    item_kind = "CTRS items (0-6)" if res.ctrs else "embedded rubric items (per-step means; a proxy, not the CTRS)"
    parts += [f"## Item profile: {item_kind}", ""]
    item_names = list(next(iter(an.items.values())).keys()) if an.items else []
    parts += [_md_table(["variant", *item_names], [[v] + [fmt(an.items[v][k]) for k in item_names] for v in order]), ""]
    if res.courses:
        name, _ = res.course_response()
        sessions = sorted({s for v in an.course_table.values() for s in v})
        parts += [f"## Courses: {name} per session", ""]
        if not res.ctrs:
            parts += ["No CTRS judge is configured, so the per-session outcome is the embedded reward (the rubric proxy), "
                      "not the CTRS of Tahir's protocol. Configure `ctrs_judge` to rate the CTRS.", ""]
        rows = [[v] + [fmt(an.course_table[v].get(s, {"mean": None})) for s in sessions] for v in order]
        parts += [_md_table(["variant"] + [f"session {s}" for s in sessions], rows), ""]
        m = an.mixed
        parts += [f"### Linear mixed-effects model: `{m.formula} + (1|{m.group})`", "",
                  f"status: **{m.status}**; {m.n_obs} sessions, {m.n_groups} patients"
                  + (f"; random-intercept variance {m.group_variance:.4g}" if m.group_variance is not None else ""), ""]
        if m.terms:
            parts += [_md_table(["term", "coef", "SE", "95% CI", "p"],
                                [[t["term"], f"{t['coef']:.3f}", f"{t['se']:.3f}", f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]",
                                  f"{t['p']:.3g}"] for t in m.terms]), ""]
        parts += [f"- {msg}" for msg in m.messages] + ([""] if m.messages else [])
        if m.contrasts:
            parts += [f"### Pairwise contrasts between variants (model-based, at the same session; Bonferroni over "
                      f"{len(m.contrasts)} pairs)", ""]
            parts += [_md_table(["contrast", "difference", "SE", "95% CI (uncorrected)", "p", "p (Bonferroni)"],
                                [[f"{c['a']} - {c['b']}", f"{c['diff']:.3f}", f"{c['se']:.3f}",
                                  f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]", f"{c['p']:.3g}", f"{c['p_bonferroni']:.3g}"]
                                 for c in m.contrasts]), ""]
    if res.crisis:
        types = sorted({r["probe_type"] for r in res.crisis})
        parts += ["## Crisis probes: pass rate by crisis type", ""]
        parts += [_md_table(["variant", *types], [[v] + [fmt(an.crisis_by_type[v][t]) for t in types] for v in order]), ""]
    for o in res.extra.values():
        parts += [*o.report, ""]
    parts += ["## Cost", "", "Per variant (therapist tokens counted with the model's tokenizer, summaries included; prompt tokens "
              "are what the model read, the chat template applied; `usd` when `prices` are configured):", ""]
    keys = sorted({k for c in res.costs.values() for k in c})
    parts += [_md_table(["variant", *keys], [[v] + [str(res.costs.get(v, {}).get(k, "")) for k in keys] for v in order]), ""]
    parts += ["Per model (one therapist call per step serves all its variants) and shared by all variants (every session "
              "steps in the same batches: one patient call per step):", ""]
    keys = sorted({k for c in res.group_costs.values() for k in c})
    parts += [_md_table(["variants", *keys], [[g] + [str(c.get(k, "")) for k in keys] for g, c in res.group_costs.items()]), ""]
    parts += ["Counts add up over resumed runs. Judge calls are batched calls: `judge_embedded_calls` counts calls of the "
              "embedded judges (the env's rubric once per step, labels, AT and safety once per scored batch), "
              "`judge_llm_calls` the LLM judges' `generate` calls (cache hits make none).", ""]
    plots = [*plots, *(p for o in res.extra.values() for p in o.plots)]
    if plots:
        parts += ["## Plots", "", *[f"![{Path(p).stem}]({_link(Path(p), out_dir)})" for p in plots], ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path


def _link(path: Path, out_dir: Path) -> str:
    """A plot's link from report.md: protocols write theirs in their own folder under ``out_dir``."""
    return str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else path.name


def write_csv(res: BenchmarkResults, out_dir: Path) -> Path:
    """``results.csv``: one row per episode (sessions and course sessions) with every metric and rubric item, then
    the rows of each registered protocol that ran (its own columns; the others empty)."""
    rows = []
    for r in res.sessions + res.courses:
        row = {k: r.get(k) for k in ("protocol", "variant", "key", "profile_id", "attitude", "seed", "session", "reward", "ended_by")}
        row["turns"] = len(r["transcript"]["turns"])
        for k, v in r["metrics"].items():
            row[k] = ";".join(str(a) for a in v) if isinstance(v, list) else v
        row.update({f"item_{k}": v for k, v in r["items"].items()})
        if r.get("memory"):  # a course session: what the patient takes into the next one
            row.update(course_reached=";".join(r["memory"]["reached"]), homework_set=r["memory"]["homework"] is not None,
                       homework_done=r["memory"]["homework_done"])
        rows.append(row)
    rows += [row for o in res.extra.values() for row in o.rows]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = out_dir / "results.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


# -- plots --------------------------------------------------------------------------------------

def _bars(ax, names: Sequence[str], cells: Sequence[dict], title: str) -> None:
    means = [c["mean"] if c["mean"] is not None else 0.0 for c in cells]
    err = [[max(0.0, m - (c["ci95"][0] if c["mean"] is not None else m)) for m, c in zip(means, cells)],
           [max(0.0, (c["ci95"][1] if c["mean"] is not None else m) - m) for m, c in zip(means, cells)]]
    ax.bar(range(len(names)), means, yerr=err, capsize=3, color=[f"C{i}" for i in range(len(names))])
    for i, c in enumerate(cells):
        if c["mean"] is None:
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)


def write_plots(res: BenchmarkResults, an: Analysis, out_dir: Path) -> list[Path]:
    """``metrics.png`` (bars with CIs), ``acts.png`` (label distributions), ``items.png`` (item profile),
    ``course.png`` (per-session outcome, when courses ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = res.variants
    labels = {**{k: v[0] for k, v in res.session_metrics().items()}, **{k: v[0] for k, v in SUMMARY_COLUMNS.items()}}
    shown = [m for m in labels if any(an.table[v].get(m, {}).get("n") for v in order)]
    paths = []
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, m in zip(axes.flat, shown):
        _bars(ax, order, [an.table[v][m] for v in order], labels[m])
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("cbtgym benchmark: mean and 95% CI per variant", fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "metrics.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    types = list(act_types())
    groups = order + (["human"] if an.human_acts else [])
    shares = [an.acts[v] for v in order] + ([an.human_acts] if an.human_acts else [])
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(groups) + 2.2))
    left = [0.0] * len(groups)
    cmap = plt.get_cmap("tab20")
    for j, t in enumerate(types):
        vals = [s.get(t, 0.0) for s in shares]
        ax.barh(range(len(groups)), vals, left=left, color=cmap(j % 20), label=t)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of therapist turns")
    ax.set_title("act-label distribution (LLM4CBT taxonomy)", fontsize=10)
    ax.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    paths.append(out_dir / "acts.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    item_names = list(next(iter(an.items.values())).keys()) if an.items else []
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(item_names) + 2), 3.6))
    for i, v in enumerate(order):
        ys = [an.items[v][k]["mean"] if an.items[v][k]["mean"] is not None else float("nan") for k in item_names]
        lo = [an.items[v][k]["ci95"][0] if an.items[v][k]["mean"] is not None else float("nan") for k in item_names]
        hi = [an.items[v][k]["ci95"][1] if an.items[v][k]["mean"] is not None else float("nan") for k in item_names]
        xs = [x + (i - len(order) / 2) * 0.06 for x in range(len(item_names))]
        ax.errorbar(xs, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]], marker="o", capsize=2, label=v)
    ax.set_xticks(range(len(item_names)), item_names, rotation=30, ha="right", fontsize=8)
    ax.set_title("CTRS item profile" if res.ctrs else "embedded rubric item profile (proxy, not CTRS)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: never over a point
    fig.tight_layout()
    paths.append(out_dir / "items.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if an.course_table:
        name, _ = res.course_response()
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for v in order:
            ss = sorted(an.course_table[v])
            cells = [an.course_table[v][s] for s in ss]
            ok = [(s, c) for s, c in zip(ss, cells) if c["mean"] is not None]
            if ok:
                ax.errorbar([s for s, _ in ok], [c["mean"] for _, c in ok],
                            yerr=[[c["mean"] - c["ci95"][0] for _, c in ok], [c["ci95"][1] - c["mean"] for _, c in ok]],
                            marker="o", capsize=2, label=v)
        ax.set_xlabel("session")
        ax.set_xticks(sorted({s for v in order for s in an.course_table[v]}))
        ax.set_ylabel(name)
        ax.set_title(f"courses: {name} per session (mean, 95% CI)", fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {name} scores", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        paths.append(out_dir / "course.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def log_wandb(run: Any, res: BenchmarkResults, an: Analysis, plots: Sequence[Path]) -> None:
    """The table, the contrasts, the mixed model and the plots, to a W&B run (no-op for ``None``)."""
    if run is None:
        return
    import wandb

    flat: dict[str, Any] = {}
    for v, cells in an.table.items():
        for m, c in cells.items():
            if c["mean"] is not None:
                flat[f"benchmark/{v}/{m}"] = c["mean"]
    for v, cells in an.contrasts.items():
        for m, c in cells.items():
            if c["mean"] is not None:
                flat[f"contrast/{v}-{res.bases[v]}/{m}"] = c["mean"]
    table = wandb.Table(columns=["variant", "metric", "mean", "ci_low", "ci_high", "n"])
    for v, cells in an.table.items():
        for m, c in cells.items():
            table.add_data(v, m, c["mean"], c["ci95"][0], c["ci95"][1], c["n"])
    flat["benchmark/table"] = table
    if an.mixed is not None and an.mixed.terms:
        mt = wandb.Table(columns=["term", "coef", "se", "ci_low", "ci_high", "p"])
        for t in an.mixed.terms:
            mt.add_data(t["term"], t["coef"], t["se"], t["ci95"][0], t["ci95"][1], t["p"])
        flat["benchmark/mixed_effects"] = mt
    if an.mixed is not None and an.mixed.contrasts:
        ct = wandb.Table(columns=["a", "b", "diff", "se", "ci_low", "ci_high", "p", "p_bonferroni"])
        for c in an.mixed.contrasts:
            ct.add_data(c["a"], c["b"], c["diff"], c["se"], c["ci95"][0], c["ci95"][1], c["p"], c["p_bonferroni"])
        flat["benchmark/course_contrasts"] = ct
    for name, o in res.extra.items():
        for v, cells in o.table.items():
            for m, c in cells.items():
                if c.get("mean") is not None:
                    flat[f"{name}/{v}/{m}"] = c["mean"]
    for p in [*plots, *(p for o in res.extra.values() for p in o.plots)]:
        flat[f"plots/{Path(p).stem}"] = wandb.Image(str(p))
    from .runner import SHARED

    for name, c in [*res.costs.items(), *(("shared" if g == SHARED else g, c) for g, c in res.group_costs.items())]:
        if c.get("usd") is not None:
            flat[f"cost/{name}/usd"] = c["usd"]
    run.log(flat)
    run.summary["costs"] = json.dumps({"variants": res.costs, "groups": res.group_costs})
