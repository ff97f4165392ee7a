"""Script configs: TRL's ``TrlParser`` over TRL's own config classes plus cbtgym's arguments, with strict YAML.

The training scripts parse ``(XArguments, XConfig, ModelConfig)`` with :func:`parse_args`, so every TRL option
is a ``--flag`` and a YAML key. On top of ``TrlParser`` this module adds what a user-facing script needs:
the YAML is read with :func:`cbtgym.strict_yaml.load_yaml` (a repeated key is an error), an unknown key is an
error naming the file and the key, the scripts' defaults for TRL fields (which differ from TRL's) are applied
before the YAML, and every config error is one line ``error: <field>: <what is wrong and the fix>`` with exit
status 2 (:func:`parse_or_exit`). The benchmark's config has free-form fields (backend dicts), which
``HfArgumentParser`` cannot type; it keeps :func:`load_config` / :func:`parse_config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

T = TypeVar("T")

SECRET_MARKERS = ("key", "token", "secret", "password")


class ConfigError(ValueError):
    """A config file or flag is invalid; the message starts with the field and says the fix."""


def read_config_file(path: str | Path, known: Iterable[str]) -> dict[str, Any]:
    """The mapping of a YAML config, refusing a missing file, repeated or unknown keys (errors name file and key)."""
    import yaml

    from ..strict_yaml import DuplicateKeyError, load_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: file {path} does not exist; give the path of a YAML file (see configs/)")
    try:
        data = load_yaml(path) or {}
    except DuplicateKeyError as e:
        raise ConfigError(f"config: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path} must be a mapping of field: value")
    known = set(known)
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown field in {path}; remove it or use one of the fields of --help")
    return data


class ScriptParser(argparse.ArgumentParser):
    """argparse errors as :class:`ConfigError` (one line naming the flag) instead of usage text."""

    def error(self, message: str) -> typing.NoReturn:
        m = re.match(r"argument --([\w-]+)(?:/[^:]*)?: (.*)", message)
        raise ConfigError(f"{m.group(1)}: {m.group(2)}" if m else message)


def _trl_parser(dataclass_types: Sequence[type]):
    from trl import TrlParser

    class _Parser(ScriptParser, TrlParser):
        pass

    return _Parser(dataclass_types)


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None,
               defaults: dict[str, Any] | None = None) -> tuple:
    """Instances of ``dataclass_types`` from ``--config file.yaml`` and flags, like ``TrlParser.parse_args_and_config``.

    Precedence: the dataclasses' defaults, then ``defaults`` (the script's own values for TRL fields),
    then the YAML, then the flags.
    """
    parser = _trl_parser(dataclass_types)
    known = {a.dest for a in parser._actions}
    unused = [k for k in defaults or {} if k not in known]
    if unused:
        raise ValueError(f"defaults name no field: {unused}")
    parser.set_defaults_with_config(**(defaults or {}))
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("config: --config needs the path of a YAML file")
        path = argv[i + 1]
        del argv[i:i + 2]
        data = read_config_file(path, known)
        if "env" in data:
            raise ConfigError(f"env: not supported in {path}; set environment variables in the shell")
        parser.set_defaults_with_config(**data)
    try:
        return tuple(parser.parse_args_into_dataclasses(args=argv))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # TRL's and transformers' own __post_init__ checks
        raise ConfigError(" ".join(str(e).split())) from None


def _checked_or_exit(parse) -> tuple:
    """Run ``parse`` and the first config's ``check(*others)``; a :class:`ConfigError` ends the process with one
    line ``error: <field>: ...`` on stderr and exit status 2 (argparse's own status for bad usage)."""
    try:
        parsed = parse()
        check = getattr(parsed[0], "check", None)
        if check is not None:
            check(*parsed[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return parsed


def parse_or_exit(dataclass_types: Sequence[type], defaults: dict[str, Any] | None = None,
                  argv: Sequence[str] | None = None) -> tuple:
    """:func:`parse_args` and the first dataclass's ``check(*others)``, before any model loads; a config error
    is one line ``error: <field>: ...`` and exit status 2."""
    return _checked_or_exit(lambda: parse_args(dataclass_types, argv, defaults))


# --- the benchmark's parser (free-form fields such as backend dicts) ---


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
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from a YAML file and a dict of overrides; errors name the field and the file."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if path is not None:
        values = {k: coerce(k, hints[k], v) for k, v in read_config_file(path, fields).items()}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ConfigError(f"{key}: unknown option --{key}; see --help for the valid options")
        values[key] = coerce(key, hints[key], value)
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None


def parse_config(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``--config file.yaml`` and ``--<field> value`` flags into ``cls``."""
    parser = ScriptParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """One JSON-able dict of the configs' fields, secret-looking fields removed (for W&B and results files)."""
    out: dict[str, Any] = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        for k, v in values.items():
            if not any(s in k.lower() for s in SECRET_MARKERS):
                out[k] = json.loads(json.dumps(v, default=str))
    return out


def parse_config_or_exit(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """:func:`parse_config` and ``cls.check()``; a config error is one line ``error: <field>: ...`` and exit 2."""
    return _checked_or_exit(lambda: (parse_config(cls, argv, description),))[0]
