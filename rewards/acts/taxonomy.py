"""The LLM4CBT act taxonomy: 13 therapist act types in 5 categories, plus ``oov``.

The definitions live in ``taxonomy.yaml`` beside this module; both act classifiers read them
(the embedded one for the label set, the LLM one renders them into its prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

TAXONOMY_FILE = Path(__file__).with_name("taxonomy.yaml")

#: The category names, in a fixed order (used for score vectors and confusion matrices).
CATEGORIES: tuple[str, ...] = ("question", "reflection", "solution", "normalizing", "psychoeducation", "oov")


@dataclass(frozen=True)
class ActType:
    """One act type of the taxonomy.

    Attributes:
        name: The label, e.g. ``question_perspectives``.
        category: One of :data:`CATEGORIES`.
        definition: One paragraph saying what counts as this type.
        examples: One or two illustrative therapist utterances.
    """

    name: str
    category: str
    definition: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    """The act types in file order, and the one-line description of each category."""

    types: tuple[ActType, ...]
    category_descriptions: dict[str, str]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def category_of(self, type_name: str) -> str:
        """The category of an act type; a clear error for an unknown label."""
        for t in self.types:
            if t.name == type_name:
                return t.category
        raise ValueError(f"unknown act type {type_name!r}; expected one of {', '.join(self.names)}")

    def __getitem__(self, type_name: str) -> ActType:
        for t in self.types:
            if t.name == type_name:
                return t
        raise KeyError(f"unknown act type {type_name!r}; expected one of {', '.join(self.names)}")


def parse_taxonomy(data: dict, source: str = "taxonomy") -> Taxonomy:
    """Validate the YAML structure of a taxonomy file.

    Args:
        data: The parsed YAML (``categories`` and ``types`` mappings).
        source: Named in error messages.
    """
    if not isinstance(data, dict) or not isinstance(data.get("types"), dict):
        raise ValueError(f"{source}: needs a 'types' mapping of act type -> {{category, definition, examples}}")
    cats = data.get("categories") or {}
    if set(cats) != set(CATEGORIES):
        raise ValueError(f"{source}: 'categories' must describe exactly {CATEGORIES} (got {sorted(cats)})")
    types = []
    for name, spec in data["types"].items():
        if not isinstance(spec, dict):
            raise ValueError(f"{source}: types.{name} must be a mapping with category, definition, examples")
        category = spec.get("category")
        if category not in CATEGORIES:
            raise ValueError(f"{source}: types.{name}.category must be one of {CATEGORIES} (got {category!r})")
        definition = str(spec.get("definition") or "").strip()
        if not definition:
            raise ValueError(f"{source}: types.{name}.definition is empty; write one paragraph")
        examples = tuple(str(e).strip() for e in spec.get("examples") or ())
        if not examples:
            raise ValueError(f"{source}: types.{name}.examples is empty; give one or two utterances")
        types.append(ActType(str(name), category, definition, examples))
    missing = set(CATEGORIES) - {t.category for t in types}
    if missing:
        raise ValueError(f"{source}: no act type in categories {sorted(missing)}")
    return Taxonomy(tuple(types), {k: str(v).strip() for k, v in cats.items()})


@lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    """The taxonomy of ``taxonomy.yaml`` (parsed once per process)."""
    return parse_taxonomy(yaml.safe_load(TAXONOMY_FILE.read_text(encoding="utf-8")), str(TAXONOMY_FILE))


def act_types() -> tuple[str, ...]:
    """The 14 labels (13 act types and ``oov``), in file order."""
    return load_taxonomy().names


def category_of(type_name: str) -> str:
    """The category of an act type (``question_emotions`` -> ``question``)."""
    return load_taxonomy().category_of(type_name)
