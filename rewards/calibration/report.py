"""The calibration report as tables on the terminal (the JSON report is the same dict, dumped)."""

from __future__ import annotations

from typing import Any

LABEL_COLUMNS = ("n", "scored", "unparsed", "accuracy", "balanced_accuracy", "kappa", "accuracy_all")
RATING_COLUMNS = ("n", "scored", "unparsed", "icc_2_1", "spearman", "mae", "exact", "within_1", "gold_mean", "judge_mean")


#: Wider confusion matrices (the 14 act types) do not fit a terminal; the JSON report has them.
MAX_CONFUSION_LABELS = 8
#: Short column titles, so the tables fit an 80-column terminal.
_TITLES = {"balanced_accuracy": "bal_acc", "accuracy_all": "acc_all", "accuracy": "acc", "unparsed": "unpars."}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, dict[str, Any]]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    for c in columns:
        table.add_column(_TITLES.get(c, c), justify="right")
    for name, metrics in rows:
        table.add_row(name, *(_cell(metrics.get(c)) for c in columns))
    return table


def _per_label(target: str, metrics: dict[str, Any]) -> Any:
    rows = [(label, m) for label, m in metrics["per_label"].items() if m["support"] or m["predicted"]]
    return _table(f"{target}: per label", ("precision", "recall", "f1", "support", "predicted"), rows)


def _confusion(target: str, confusion: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{target}: confusion (rows human, columns judge)", title_justify="left")
    table.add_column("", no_wrap=True)
    for c in confusion["columns"]:
        table.add_column(c[:10], justify="right")
    for label, row in zip(confusion["labels"], confusion["matrix"]):
        if any(row):
            table.add_row(label, *(str(v) for v in row))
    return table


def render(report: dict[str, Any], console: Any = None) -> None:
    """Print ``report`` (what :func:`rewards.calibration.calibrate` returns) as tables."""
    from rich.console import Console

    console = console or Console()
    console.print(f"calibrate {report['kind']}: judge {report['judge']!r} on {report['data']} "
                  f"({report['lines']} lines, {report['seconds']:.1f} s)")
    metrics = report["metrics"]
    if report["kind"] == "ctrs":
        rows = [("overall", metrics["overall"]), *metrics["items"].items()]
        console.print(_table(f"CTRS ratings vs human ({metrics['sessions']} sessions); ICC(2,1): two-way random, "
                             "absolute agreement, single rater", RATING_COLUMNS, rows))
        return
    for target, m in metrics.items():
        if "confusion" in m:
            console.print(_table(target, LABEL_COLUMNS, [(target, m)]))
            console.print(_per_label(target, m))
            if len(m["confusion"]["labels"]) <= MAX_CONFUSION_LABELS:
                console.print(_confusion(target, m["confusion"]))
            else:
                console.print(f"{target}: confusion matrix ({len(m['confusion']['labels'])} labels) in the JSON report (--out)")
        else:  # label sets (crisis types, distortions): per-label detection
            console.print(f"{target}: {m['scored']} of {m['n']} scored, {m['unparsed']} unparsed, exact set match {_cell(m['exact'])}, "
                          f"any match {_cell(m['any_match'])}, micro F1 {_cell(m['micro_f1'])}, macro F1 {_cell(m['macro_f1'])}")
            console.print(_per_label(target, m))
