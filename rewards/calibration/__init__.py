"""How well a judge agrees with people: ``cbtgym calibrate --judge SPEC --data FILE``.

A judge that disagrees with clinicians is a reward to be hacked, not a reward to train on, so
check any judge (above all an LLM judge on a new model) against human labels first. The data is
JSONL, one labelled item per line (formats in :mod:`rewards.calibration.data`; small examples
written for the project in ``rewards/calibration/examples/``):

* ``acts``: ``{"text", "category" (or "type"), "type"?, "context"?}``; agreement on the act
  category and, for lines with a type, on the type.
* ``crisis``: ``{"text", "crisis": bool, "types"?}``; agreement on crisis / no crisis and, for
  lines with types, per-type detection.
* ``reply_check``: ``{"stimulus", "reply", "appropriate": bool}``; agreement on appropriate /
  inappropriate (the judge's ``response_safe``).
* ``ctrs``: ``{"dialogue": turns or "Therapist: ...\\nPatient: ...", "item": CTRS key, "rating": 0-6}``
  (the shape of clinician-rated sets such as TherapyJudgeBench); the CTRS judge on a backend.

Label kinds report accuracy, balanced accuracy, Cohen's kappa, per-label precision/recall/F1 and
support and the confusion matrix; ratings report ICC(2,1), Spearman's rho, MAE and exact /
within-one agreement per item and overall (:mod:`rewards.calibration.metrics`). Items an LLM
judge could not parse are counted as ``unparsed``, never scored as a label.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .data import KINDS, infer_kind, load_items, spread
from .metrics import cohen_kappa, icc_2_1, label_agreement, rating_agreement, spearman
from .run import calibrate_labels, calibrate_ratings


def calibrate(judge: Any, data: str | Path, *, kind: str | None = None, limit: int | None = None,
              progress: bool = True, **judge_options: Any) -> dict[str, Any]:
    """Measure a judge's agreement with the human labels of a file.

    The whole file is validated before the judge (possibly a model) is built.

    Args:
        judge: A spec for :func:`rewards.factory.make_judge` (``"embedded"``, ``"rules"``, a
            backend spec) or a Backend; for ``ctrs`` a backend spec (``"embedded"`` = SmolLM2).
        data: The labelled JSONL file.
        kind: One of :data:`~rewards.calibration.data.KINDS`; default: told from the first line's fields.
        limit: Only this many items, evenly spaced over the file.
        progress: Show a progress bar.
        **judge_options: Passed to the judge's constructor (e.g. ``max_attempts``).

    Returns:
        ``{"kind", "judge", "data", "lines", "seconds", "metrics"}``; ``metrics`` as
        :func:`calibrate_labels` or :func:`calibrate_ratings` return them.
    """
    kind = kind or infer_kind(data)
    items = spread(load_items(kind, data), limit)
    start = time.perf_counter()
    if kind == "ctrs":
        from ..factory import resolve_backend

        metrics = calibrate_ratings(resolve_backend(judge), items, progress=progress, **judge_options)
    else:
        from ..factory import make_judge

        metrics = calibrate_labels(kind, make_judge(kind, judge, **judge_options), items, progress=progress)
    name = judge if isinstance(judge, (str, dict)) else getattr(judge, "name", type(judge).__name__)
    return {"kind": kind, "judge": name, "data": str(data), "lines": len(items),
            "seconds": time.perf_counter() - start, "metrics": metrics}


__all__ = [
    "KINDS", "calibrate", "calibrate_labels", "calibrate_ratings", "cohen_kappa", "icc_2_1", "infer_kind",
    "label_agreement", "load_items", "rating_agreement", "spearman", "spread",
]
