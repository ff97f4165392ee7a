"""YAML reading that refuses what ``yaml.safe_load`` silently accepts: a key written twice in one mapping.

A config or profile file with a repeated key (``k: 2`` ... ``k: 6``) is almost always an editing mistake, and
``safe_load`` keeps the last value without a word. Every file a user writes (script configs, profiles, composite
rewards) is read with :func:`load_yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class DuplicateKeyError(ValueError):
    """A mapping in a YAML file names the same key twice."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise DuplicateKeyError(f"{key_node.start_mark.name}:{line}: key {key!r} appears twice in one mapping "
                                    f"(first on line {seen[key]}); keep one of them")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(source: str | Path, *, text: str | None = None) -> Any:
    """Parse a YAML file (or ``text``, reported as ``source``); a repeated key is a :class:`DuplicateKeyError`."""
    if text is None:
        text = Path(source).read_text(encoding="utf-8")
    loader = _StrictLoader(text)
    loader.name = str(source)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
