"""Statistics of a benchmark: means with bootstrap CIs, paired contrasts, act distributions and the
linear mixed-effects model of the course protocol.

Missing values (``None``: not applicable, or a judge that could not score) are left out of a
mean and counted in ``n``; they are never read as 0.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..training.stats import bootstrap_ci, paired_bootstrap

Getter = Callable[[dict[str, Any]], Any]


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def mean_ci(values: Sequence[Any], seed: int = 0) -> dict[str, Any]:
    """``{"mean", "ci95", "n", "missing"}`` of the numeric values (``None`` skipped; no value: mean ``None``)."""
    xs = [x for x in (_number(v) for v in values) if x is not None]
    missing = len(values) - len(xs)
    if not xs:
        return {"mean": None, "ci95": [None, None], "n": 0, "missing": missing}
    lo, hi = bootstrap_ci(xs, seed=seed)
    return {"mean": float(np.mean(xs)), "ci95": [lo, hi], "n": len(xs), "missing": missing}


def by_variant(records: Sequence[dict[str, Any]], order: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {v: [] for v in order}
    for r in records:
        groups.setdefault(r["variant"], []).append(r)
    return groups


def metric_table(records: Sequence[dict[str, Any]], metrics: dict[str, Getter], order: Sequence[str]) -> dict[str, dict[str, dict]]:
    """``table[variant][metric]`` = :func:`mean_ci` of that metric over the variant's records."""
    return {v: {m: mean_ci([get(r) for r in rs]) for m, get in metrics.items()} for v, rs in by_variant(records, order).items()}


def paired_contrast(records: Sequence[dict[str, Any]], variant: str, base: str, metrics: dict[str, Getter]) -> dict[str, dict]:
    """``variant - base`` per metric over the episodes both ran (same key) and both scored."""
    mine = {r["key"]: r for r in records if r["variant"] == variant}
    theirs = {r["key"]: r for r in records if r["variant"] == base}
    out = {}
    for m, get in metrics.items():
        pairs = [(_number(get(theirs[k])), _number(get(mine[k]))) for k in sorted(mine.keys() & theirs.keys())]
        pairs = [(b, a) for b, a in pairs if a is not None and b is not None]
        if not pairs:
            out[m] = {"mean": None, "ci95": [None, None], "n": 0}
            continue
        d = paired_bootstrap([b for b, _ in pairs], [a for _, a in pairs])
        out[m] = {**d, "n": len(pairs)}
    return out


def act_distribution(records: Sequence[dict[str, Any]], order: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Share of each act label among a variant's therapist turns (``records[i]["metrics"]["acts"]``)."""
    out = {}
    for v, rs in by_variant(records, order).items():
        counts = Counter(a or "unlabelled" for r in rs for a in r["metrics"].get("acts", []))
        total = sum(counts.values())
        out[v] = {lab: counts[lab] / total if total else 0.0 for lab in list(labels) + (["unlabelled"] if counts["unlabelled"] else [])}
    return out


@dataclass
class MixedEffects:
    """A fitted (or failed) linear mixed-effects model.

    Attributes:
        formula: The fixed-effects formula; the random intercept is per ``group``.
        status: ``"ok"``, ``"boundary"`` (fitted, but a variance is ~0 or the fit warned: read with
            care), ``"fallback"`` (the mixed model failed; OLS with patient-clustered errors instead)
            or ``"failed"``.
        terms: Rows ``{term, coef, se, ci95, p}``.
        contrasts: Every pair of variants, ``{a, b, diff, se, ci95, p, p_bonferroni}``: the model's
            ``a - b`` at the same session (a Wald t-test on the fit), ``p_bonferroni`` corrected for
            the number of pairs.
        group_variance: Variance of the random intercept (``None`` when not fitted).
        messages: Warnings and errors, for the report.
    """

    formula: str
    group: str
    status: str
    terms: list[dict[str, Any]] = field(default_factory=list)
    contrasts: list[dict[str, Any]] = field(default_factory=list)
    group_variance: float | None = None
    n_obs: int = 0
    n_groups: int = 0
    messages: list[str] = field(default_factory=list)


def _terms(fit: Any) -> list[dict[str, Any]]:
    ci = fit.conf_int()
    rows = []
    for name in fit.fe_params.index if hasattr(fit, "fe_params") else fit.params.index:
        lo, hi = ci.loc[name]
        rows.append({"term": name, "coef": float(fit.params[name]), "se": float(fit.bse[name]),
                     "ci95": [float(lo), float(hi)], "p": float(fit.pvalues[name])})
    return rows


def _pairwise(fit: Any, df: Any, formula: str) -> list[dict[str, Any]]:
    """Bonferroni-corrected contrasts between every pair of variants: each variant's row of the fixed-effects
    design (at the mean session), differenced and t-tested on the fit."""
    from itertools import combinations

    from patsy import dmatrix
    from statsmodels.stats.multitest import multipletests

    info = dmatrix(formula.split("~", 1)[1], df, return_type="dataframe").design_info
    cells = df.drop_duplicates("variant").assign(session_centered=0.0).set_index("variant", drop=False)
    design = dmatrix(info, cells, return_type="dataframe").set_index(cells.index)
    names = list(fit.fe_params.index if hasattr(fit, "fe_params") else fit.params.index)
    design = design[names]  # the fit's order of parameters
    rows = []
    for a, b in combinations(sorted(cells.index), 2):
        test = fit.t_test((design.loc[a] - design.loc[b]).to_numpy(dtype=float)[None, :])
        lo, hi = np.asarray(test.conf_int()).ravel()
        rows.append({"a": a, "b": b, "diff": float(np.ravel(test.effect)[0]), "se": float(np.ravel(test.sd)[0]),
                     "ci95": [float(lo), float(hi)], "p": float(np.ravel(test.pvalue)[0])})
    if rows:
        for row, p in zip(rows, multipletests([r["p"] for r in rows], method="bonferroni")[1]):
            row["p_bonferroni"] = float(p)
    return rows


def _fixed_effects(df: Any, reference: str) -> tuple[str, list[str]]:
    """The fixed-effects formula: ``C(variant)``, or, when the variants run on several base models and some
    treatment (prompt, adapter) runs on more than one, ``C(treatment) + C(model)``; with the messages why."""
    variant = f"C(variant, Treatment(reference={reference!r}))"
    if "model" not in df or df["model"].nunique() < 2:
        return f"y ~ {variant} + session_centered", []
    import patsy

    ref = df[df["variant"] == reference].iloc[0]
    formula = (f"y ~ C(treatment, Treatment(reference={ref['treatment']!r})) + C(model, Treatment(reference={ref['model']!r}))"
               " + session_centered")
    x = patsy.dmatrix(formula.split("~", 1)[1], df, return_type="dataframe")
    if np.linalg.matrix_rank(x.to_numpy(dtype=float)) < x.shape[1]:
        return f"y ~ {variant} + session_centered", [
            f"{df['model'].nunique()} base models, but no treatment runs on two of them: model and treatment cannot be "
            "told apart, so C(model) is left out (C(variant) holds both)"]
    return formula, [f"{df['model'].nunique()} base models: C(treatment) + C(model) instead of C(variant)"]


def mixed_effects(rows: Sequence[dict[str, Any]], reference: str, *, response: str = "total", group: str = "patient") -> MixedEffects:
    """``total ~ C(variant) + session_centered + (1|patient)`` with statsmodels ``mixedlm``, and pairwise contrasts.

    When the rows carry ``model`` (the variant's base model) and ``treatment`` (what the variant does on it:
    its prompt and adapter) and there are several models, the fixed effects are
    ``C(treatment) + C(model) + session_centered`` (a variant is its treatment on its model), provided some
    treatment runs on two models; otherwise the two cannot be told apart and ``C(variant)`` stays.

    Args:
        rows: One dict per session with ``variant``, ``session`` (1-based), ``patient`` and ``response``
            (optionally ``model`` and ``treatment``).
        reference: The variant the others are compared with (the model's intercept).
        response: The outcome column (CTRS total, or the embedded reward when there is no CTRS judge).
        group: The column of the random intercept.

    Never raises for a bad fit: a singular or non-converging model is reported in ``status`` and
    ``messages``, with an OLS fit (errors clustered by patient) as the fallback estimate.
    """
    import pandas as pd
    import statsmodels.formula.api as smf

    extra = [k for k in ("model", "treatment") if rows and all(r.get(k) is not None for r in rows)]
    df = pd.DataFrame([{k: r[k] for k in ("variant", "session", group, *extra)} | {"y": _number(r[response])} for r in rows]).dropna()
    result = MixedEffects("", group, "failed", n_obs=len(df), n_groups=int(df[group].nunique()) if len(df) else 0)
    if df.empty or df["variant"].nunique() < 2 or reference not in set(df["variant"]):
        result.formula = f"{response} ~ C(variant) + session_centered"
        result.messages.append(f"not fitted: needs sessions of at least two variants including the reference {reference!r}")
        return result
    df["session_centered"] = df["session"] - df["session"].mean()
    formula, result.messages = _fixed_effects(df if len(extra) == 2 else df.drop(columns=extra), reference)
    if df["session"].nunique() < 2:
        formula = formula.replace(" + session_centered", "")
        result.messages.append("one session per patient: session_centered left out")
    result.formula = formula.replace("y ~", f"{response} ~")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = smf.mixedlm(formula, df, groups=df[group]).fit(reml=True)
        result.messages += sorted({str(w.message).splitlines()[0] for w in caught})
        if not np.all(np.isfinite(fit.bse.reindex(fit.fe_params.index).to_numpy(dtype=float))):
            raise np.linalg.LinAlgError("non-finite standard errors (singular fit)")
        result.terms, result.contrasts = _terms(fit), _pairwise(fit, df, formula)
        result.group_variance = float(np.asarray(fit.cov_re)[0, 0])
        boundary = result.group_variance < 1e-8 or any("boundary" in m or "converge" in m.lower() for m in result.messages)
        result.status = "boundary" if boundary else "ok"
        return result
    except Exception as e:  # statsmodels raises several types for singular designs
        result.messages.append(f"mixed model failed: {type(e).__name__}: {e}")
    try:
        ols = smf.ols(formula, df).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(df[group])[0]})
        if not np.all(np.isfinite(ols.bse.to_numpy(dtype=float))):
            raise np.linalg.LinAlgError("non-finite standard errors")
        result.terms, result.contrasts, result.status = _terms(ols), _pairwise(ols, df, formula), "fallback"
        result.messages.append("fallback: OLS with standard errors clustered by patient (no random intercept)")
    except Exception as e:
        result.messages.append(f"OLS fallback failed too: {type(e).__name__}: {e}")
    return result


def course_rows(records: Sequence[dict[str, Any]], response: Getter, models: dict[str, tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Rows for :func:`mixed_effects` from course records (patient = profile, attitude and seed);
    ``models[variant] = (base model, treatment)`` adds those columns."""
    models = models or {}
    return [{"variant": r["variant"], "session": r["session"], "patient": f"{r['profile_id']}|{r['attitude']}|{r['seed']}",
             "total": response(r), **dict(zip(("model", "treatment"), models.get(r["variant"], ())))} for r in records]


def per_session_means(records: Sequence[dict[str, Any]], response: Getter, order: Sequence[str]) -> dict[str, dict[int, dict]]:
    """``out[variant][session]`` = :func:`mean_ci` of the response."""
    out: dict[str, dict[int, dict]] = {}
    for v, rs in by_variant(records, order).items():
        sessions: dict[int, list[Any]] = defaultdict(list)
        for r in rs:
            sessions[r["session"]].append(response(r))
        out[v] = {s: mean_ci(vals) for s, vals in sorted(sessions.items())}
    return out
