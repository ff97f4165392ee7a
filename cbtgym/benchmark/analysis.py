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
        group_variance: Variance of the random intercept (``None`` when not fitted).
        messages: Warnings and errors, for the report.
    """

    formula: str
    group: str
    status: str
    terms: list[dict[str, Any]] = field(default_factory=list)
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


def mixed_effects(rows: Sequence[dict[str, Any]], reference: str, *, response: str = "total", group: str = "patient") -> MixedEffects:
    """``total ~ C(variant) + session_centered + (1|patient)`` with statsmodels ``mixedlm``.

    Args:
        rows: One dict per session with ``variant``, ``session`` (1-based), ``patient`` and ``response``.
        reference: The variant the others are compared with (the model's intercept).
        response: The outcome column (CTRS total, or the embedded reward when there is no CTRS judge).
        group: The column of the random intercept.

    Never raises for a bad fit: a singular or non-converging model is reported in ``status`` and
    ``messages``, with an OLS fit (errors clustered by patient) as the fallback estimate.
    """
    import pandas as pd
    import statsmodels.formula.api as smf

    df = pd.DataFrame([{k: r[k] for k in ("variant", "session", group)} | {"y": _number(r[response])} for r in rows]).dropna()
    formula = f"y ~ C(variant, Treatment(reference={reference!r})) + session_centered"
    result = MixedEffects(formula.replace("y ~", f"{response} ~"), group, "failed", n_obs=len(df),
                          n_groups=int(df[group].nunique()) if len(df) else 0)
    if df.empty or df["variant"].nunique() < 2 or reference not in set(df["variant"]):
        result.messages.append(f"not fitted: needs sessions of at least two variants including the reference {reference!r}")
        return result
    df["session_centered"] = df["session"] - df["session"].mean()
    if df["session"].nunique() < 2:
        formula = formula.replace(" + session_centered", "")
        result.formula = result.formula.replace(" + session_centered", "")
        result.messages.append("one session per patient: session_centered left out")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = smf.mixedlm(formula, df, groups=df[group]).fit(reml=True)
        result.messages += sorted({str(w.message).splitlines()[0] for w in caught})
        if not np.all(np.isfinite(fit.bse.reindex(fit.fe_params.index).to_numpy(dtype=float))):
            raise np.linalg.LinAlgError("non-finite standard errors (singular fit)")
        result.terms = _terms(fit)
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
        result.terms, result.status = _terms(ols), "fallback"
        result.messages.append("fallback: OLS with standard errors clustered by patient (no random intercept)")
    except Exception as e:
        result.messages.append(f"OLS fallback failed too: {type(e).__name__}: {e}")
    return result


def course_rows(records: Sequence[dict[str, Any]], response: Getter) -> list[dict[str, Any]]:
    """Rows for :func:`mixed_effects` from course records (patient = profile, attitude and seed)."""
    return [{"variant": r["variant"], "session": r["session"], "patient": f"{r['profile_id']}|{r['attitude']}|{r['seed']}",
             "total": response(r)} for r in records]


def per_session_means(records: Sequence[dict[str, Any]], response: Getter, order: Sequence[str]) -> dict[str, dict[int, dict]]:
    """``out[variant][session]`` = :func:`mean_ci` of the response."""
    out: dict[str, dict[int, dict]] = {}
    for v, rs in by_variant(records, order).items():
        sessions: dict[int, list[Any]] = defaultdict(list)
        for r in rs:
            sessions[r["session"]].append(response(r))
        out[v] = {s: mean_ci(vals) for s, vals in sorted(sessions.items())}
    return out
