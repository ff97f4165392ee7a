"""The course protocol's mixed model when variants run on several base models, and its Bonferroni contrasts,
on synthetic sessions whose true effects are known."""

from __future__ import annotations

import numpy as np

from cbtgym.benchmark.analysis import mixed_effects

TREATMENT, MODEL, SLOPE = {"naive": 0.0, "course": 1.0}, {"small": 0.0, "large": 1.0}, 0.3


def course_sessions(variants: dict[str, tuple[str, str]], patients: int = 20, seed: int = 0) -> list[dict]:
    """Sessions of each variant (= a treatment on a model) with a random patient intercept and noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        intercept = rng.normal(0, 1.0)
        for v, (model, treatment) in variants.items():
            for s in (1, 2, 3):
                y = 2 + intercept + TREATMENT[treatment] + MODEL[model] + SLOPE * (s - 2) + rng.normal(0, 0.3)
                rows.append({"variant": v, "session": s, "patient": f"p{p}", "total": y, "model": model, "treatment": treatment})
    return rows


def test_several_base_models_add_c_model_and_bonferroni_contrasts_find_the_true_differences():
    crossed = {f"{t}-{m}": (m, t) for m in MODEL for t in TREATMENT}
    m = mixed_effects(course_sessions(crossed), "naive-small")
    assert m.status == "ok" and "C(model" in m.formula and "C(treatment" in m.formula
    terms = {t["term"]: t for t in m.terms}
    course = terms["C(treatment, Treatment(reference='naive'))[T.course]"]
    large = terms["C(model, Treatment(reference='small'))[T.large]"]
    assert course["ci95"][0] < 1.0 < course["ci95"][1] and large["ci95"][0] < 1.0 < large["ci95"][1]
    pairs = {(c["a"], c["b"]): c for c in m.contrasts}
    assert len(pairs) == 6  # every pair of the four variants
    for c in pairs.values():
        assert c["p_bonferroni"] == min(1.0, 6 * c["p"])
    # course on the small model and naive on the large one differ by 1.0 - 1.0 = 0: no corrected evidence
    assert abs(pairs[("course-small", "naive-large")]["diff"]) < 0.2 and pairs[("course-small", "naive-large")]["p_bonferroni"] > 0.05
    both = pairs[("course-large", "naive-small")]
    assert both["ci95"][0] < 2.0 < both["ci95"][1] and both["p_bonferroni"] < 1e-6


def test_models_nested_in_variants_keep_c_variant_and_say_why():
    nested = {"naive-small": ("small", "naive"), "course-large": ("large", "course")}
    m = mixed_effects(course_sessions(nested), "naive-small")
    assert "C(model" not in m.formula and "C(variant" in m.formula
    assert any("cannot be told apart" in msg for msg in m.messages)
    (c,) = m.contrasts
    assert c["a"] == "course-large" and c["ci95"][0] < 2.0 < c["ci95"][1] and c["p_bonferroni"] == c["p"]
