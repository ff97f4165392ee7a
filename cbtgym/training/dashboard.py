"""The project's W&B dashboard: a workspace of the panels in dashboard.yaml, built with ``wandb-workspaces``.

``cbtgym dashboard --entity E --project P`` saves it (W&B online, ``WANDB_API_KEY`` set); ``--dry-run`` (or no key)
only builds it and writes its definition as JSON, which needs no network. The panel keys are the keys
cbtgym/training/tracking.py logs (a test checks that every one is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError

PANELS_PATH = Path(__file__).with_name("dashboard.yaml")
PANEL_TYPES = ("bar", "scalar", "line", "table")
INSTALL_HINT = "pip install 'cbtgym[wandb]' (wandb-workspaces)"


@dataclass(frozen=True)
class Panel:
    """One panel of dashboard.yaml: ``kind`` in :data:`PANEL_TYPES`, its ``keys`` (one for scalar and table) or a
    ``regex`` over key names (line panels only)."""

    kind: str
    title: str
    keys: tuple[str, ...] = ()
    regex: str | None = None


@dataclass(frozen=True)
class Section:
    name: str
    panels: tuple[Panel, ...]


def _panel(raw: Any, where: str) -> Panel:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a panel is a mapping with type, title and keys/key/regex")
    kind, title = raw.get("type"), raw.get("title")
    if kind not in PANEL_TYPES:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {PANEL_TYPES}")
    if not isinstance(title, str) or not title:
        raise ConfigError(f"{where}.title: give the panel a title")
    unknown = set(raw) - {"type", "title", "keys", "key", "regex"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; use keys, key or regex")
    single = kind in ("scalar", "table")
    if single and (not isinstance(raw.get("key"), str) or set(raw) & {"keys", "regex"}):
        raise ConfigError(f"{where}.key: a {kind} panel shows one key: give 'key: <name>'")
    if not single:
        keys, regex = raw.get("keys"), raw.get("regex")
        if "key" in raw or (keys is None) == (regex is None) or (regex is not None and kind != "line"):
            raise ConfigError(f"{where}.keys: a {kind} panel needs 'keys: [...]'" + (" or 'regex: ...'" if kind == "line" else ""))
        if keys is not None and (not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys)):
            raise ConfigError(f"{where}.keys: a non-empty list of key names")
        return Panel(kind, title, tuple(keys or ()), regex)
    return Panel(kind, title, (raw["key"],))


def load_panels(path: str | Path = PANELS_PATH) -> tuple[str, list[Section]]:
    """The workspace name and sections of a panels file (format: the comment at the top of dashboard.yaml).

    Raises:
        ConfigError: naming the section/panel field that is wrong.
    """
    from ..strict_yaml import load_yaml

    data = load_yaml(Path(path))
    if not isinstance(data, dict) or not isinstance(data.get("sections"), list):
        raise ConfigError(f"sections: {path} needs 'name' and a list 'sections' (see {PANELS_PATH.name})")
    sections = []
    for i, sec in enumerate(data["sections"]):
        where = f"sections[{i}]"
        if not isinstance(sec, dict) or not isinstance(sec.get("name"), str) or not isinstance(sec.get("panels"), list):
            raise ConfigError(f"{where}: a section is 'name: ...' and a list 'panels: [...]'")
        sections.append(Section(sec["name"], tuple(_panel(p, f"{where}.panels[{j}]") for j, p in enumerate(sec["panels"]))))
    return str(data.get("name") or "cbtgym"), sections


def panel_keys(sections: list[Section]) -> set[str]:
    """Every exact key the panels name."""
    return {k for s in sections for p in s.panels for k in p.keys}


def _wandb_panel(panel: Panel):
    import wandb_workspaces.reports.v2 as wr

    if panel.kind == "bar":
        return wr.BarPlot(title=panel.title, metrics=list(panel.keys), orientation="v")
    if panel.kind == "scalar":
        return wr.ScalarChart(title=panel.title, metric=panel.keys[0])
    if panel.kind == "line":
        if panel.regex is not None:
            return wr.LinePlot(title=panel.title, x="train/global_step", metric_regex=panel.regex)
        return wr.LinePlot(title=panel.title, x="train/global_step", y=list(panel.keys))
    return wr.WeavePanelSummaryTable(table_name=panel.keys[0])


def build_workspace(entity: str, project: str, name: str | None = None, path: str | Path | None = None):
    """A ``wandb_workspaces.workspaces.Workspace`` of the panels in ``path`` (built offline; ``.save()`` uploads it).

    Raises:
        ConfigError: wandb-workspaces is not installed, or the panels file is wrong.
    """
    try:
        import wandb_workspaces.workspaces as ws
    except ImportError:
        raise ConfigError(f"dashboard: the dashboard needs wandb-workspaces: {INSTALL_HINT}") from None
    default_name, sections = load_panels(path or PANELS_PATH)
    return ws.Workspace(entity=entity, project=project, name=name or default_name, sections=[
        ws.Section(name=s.name, is_open=True, panels=[_wandb_panel(p) for p in s.panels]) for s in sections])


def definition(workspace) -> dict[str, Any]:
    """The JSON W&B stores for ``workspace`` (its view spec), as ``save()`` would send it."""
    return workspace._spec  # wandb-workspaces' own serialisation (the view spec upsert_view sends)
