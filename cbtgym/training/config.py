"""Typed script configs: a dataclass filled from a YAML file, then from ``--field value`` flags.

Like TRL's ``TrlParser``: ``--config path.yaml`` sets defaults, CLI flags override them,
every field's ``metadata["help"]`` is its ``--help`` text, and unknown keys are errors
that name the key, the file and the valid keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or flag is invalid; the message names the field and the fix."""


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return origin or tp


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or CLI value to the field's type, or raise naming the field."""
    if value is None:
        return None
    base = _base_type(tp)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if base in (int, float, str):
            if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in typing.get_args(tp):
                return None
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return base(value)
        if base in (list, tuple, dict):
            if isinstance(value, str):
                value = json.loads(value) if value.strip()[:1] in "[{" else [v for v in value.split(",") if v]
            if base is dict and not isinstance(value, dict):
                raise ValueError
            return base(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"field '{name}': cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from a YAML file and a dict of overrides; errors name the field and the file."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of field: value")
        for key, value in data.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown field '{key}'; valid fields: {', '.join(sorted(fields))}")
            values[key] = coerce(key, hints[key], value)
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"unknown option '--{key}'; valid options: {', '.join('--' + f for f in sorted(fields))}")
        values[key] = coerce(key, hints[key], value)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None


def parse_config(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``--config file.yaml`` and ``--<field> value`` flags into ``cls``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML file whose fields set the defaults")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar=getattr(_base_type(hints[f.name]), "__name__", "VALUE").upper(),
                            help=f"{f.metadata.get('help', '')} (default: {default!r})")
    ns = vars(parser.parse_args(argv))
    path = ns.pop("config", None)
    return load_config(cls, path, ns)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config, with secret-looking fields removed (for W&B and results files)."""
    out = {}
    for k, v in dataclasses.asdict(config).items():
        if any(s in k.lower() for s in ("key", "token", "secret", "password")):
            continue
        out[k] = v
    return out
