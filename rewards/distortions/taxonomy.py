"""The cognitive-distortion taxonomy (Beck 1979; Burns 1980): 13 labels, each with a one-line definition.

``taxonomy.yaml`` beside this module is the one source of the labels: the detectors, the profile
field ``distortions``, the calibration kind and the benchmark protocol all read it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.yaml")


@dataclass(frozen=True)
class Distortion:
    """One label: its name, one-line definition and other names a reply may use for it."""

    name: str
    definition: str
    aliases: tuple[str, ...] = ()


def parse_taxonomy(data: Any, source: str = "taxonomy") -> tuple[Distortion, ...]:
    """Validate a taxonomy mapping ``label -> {definition, aliases?}``; errors name the label and field."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{source}: needs a mapping of distortion label -> {{definition, aliases}}")
    out = []
    for name, spec in data.items():
        if not isinstance(spec, dict) or not str(spec.get("definition") or "").strip():
            raise ValueError(f"{source}: {name}.definition is missing; write one line saying what the distortion is")
        aliases = spec.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ValueError(f"{source}: {name}.aliases must be a list of names (or absent)")
        out.append(Distortion(str(name), " ".join(str(spec["definition"]).split()), tuple(a.strip() for a in aliases)))
    return tuple(out)


@lru_cache(maxsize=1)
def load_taxonomy() -> tuple[Distortion, ...]:
    """The distortions of ``taxonomy.yaml``, in file order (parsed once per process)."""
    return parse_taxonomy(yaml.safe_load(TAXONOMY_FILE.read_text(encoding="utf-8")), str(TAXONOMY_FILE))


def distortion_labels() -> tuple[str, ...]:
    """The 13 labels, in file order."""
    return tuple(d.name for d in load_taxonomy())


def check_labels(values: Any, where: str) -> tuple[str, ...]:
    """``values`` as a tuple of distinct taxonomy labels; a ValueError naming ``where`` and the valid labels otherwise."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: must be a list of distortion labels (got {values!r}); use [] for no distortion")
    labels = distortion_labels()
    unknown = [v for v in values if v not in labels]
    if unknown:
        raise ValueError(f"{where}: unknown distortion label(s) {unknown}; use labels from {', '.join(labels)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: a label appears twice in {list(values)}; list each once")
    return tuple(values)


def render_definitions() -> str:
    """The taxonomy as prompt text: one ``- label: definition`` line per distortion."""
    return "\n".join(f"- {d.name}: {d.definition}" for d in load_taxonomy())


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", text.lower()).split())


@lru_cache(maxsize=1)
def _phrases() -> tuple[tuple[str, str], ...]:
    # Each label is found by its own name (underscores as spaces) and its aliases, longest phrase first,
    # so that "all or nothing thinking" is not read as something shorter inside it.
    pairs = {(_key(d.name), d.name) for d in load_taxonomy()} | {(_key(a), d.name) for d in load_taxonomy() for a in d.aliases}
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def labels_in(text: str) -> list[str]:
    """The labels a free-text reply names (by label or alias, as whole words), in taxonomy order."""
    key = f" {_key(text or '')} "
    found = set()
    for phrase, label in _phrases():
        if f" {phrase} " in key:
            found.add(label)
            key = key.replace(f" {phrase} ", " | ")
    return [name for name in distortion_labels() if name in found]


def normalise_labels(values: Iterable[Any]) -> list[str] | None:
    """JSON label values as taxonomy labels (names or aliases, any case); ``None`` when one is not a label."""
    out: list[str] = []
    for v in values:
        found = labels_in(v) if isinstance(v, str) else []
        if len(found) != 1:
            return None
        if found[0] not in out:
            out.append(found[0])
    return out
