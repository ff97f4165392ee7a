"""Resume a JSONL job only with the settings that wrote it.

A resumable file (``cbtgym simulate --out``, ``candidates.jsonl``, the DPO eval files) is keyed per
episode, and an episode key (``drawn|attitude|seed``) says nothing about the backend, prompt, profiles,
rounds or reward that produced it. So next to each file sits ``<file>.settings.json``: the settings that
shape its records, written before the first record. Resuming compares them with the new run's settings;
a difference is a :class:`ResumeMismatch` naming every differing setting with its old and new value,
never a silent mix of two experiments in one file.

Settings are plain JSON (:func:`settings_value` turns backends, samplings, patients and paths into it).
Secrets never enter them: a backend contributes its ``describe()`` identity (URLs without user info or
query), and a value equal to a secret-looking environment variable is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

SIDECAR_SUFFIX = ".settings.json"
#: Environment variables whose values must never be written into a settings file.
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_MAX_DEPTH = 4
#: Strings longer than this (system prompts, templates) are recorded by digest.
_LONG_TEXT = 200
FRESH_HINT = "start a new file with fresh=True (the old one is kept as <file>.bak)"
#: For callers without a ``fresh`` switch.
REMOVE_HINT = "remove the file and its .settings.json to start over"


class ResumeMismatch(ValueError):
    """A resumable file was written with other settings than the run that wants to extend it.

    Attributes:
        path: The JSONL file.
        differences: ``{setting: (old, new)}`` for each differing setting (dotted names).
    """

    def __init__(self, path: Path, differences: Mapping[str, tuple[Any, Any]], fresh_hint: str) -> None:
        self.path = path
        self.differences = dict(differences)
        listed = "; ".join(f"{k}: {_short(old)} -> {_short(new)}" for k, (old, new) in self.differences.items())
        super().__init__(
            f"{path} was written with other settings ({listed}); resuming would mix two runs in one file. "
            f"Write to another output, or {fresh_hint}"
        )


def sidecar_path(path: str | Path) -> Path:
    """``<file>.settings.json`` beside ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A stable hex digest of a JSON-able settings dict (key order does not matter)."""
    canonical = json.dumps(settings_value(settings), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def text_digest(text: str) -> str:
    """A short digest of a long text setting (a system prompt), so the sidecar stays readable."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def settings_value(obj: Any, _depth: int = 0) -> Any:
    """``obj`` as plain JSON that is the same in every process (no ids, no memory addresses).

    Backends (and anything with a ``describe()``) give that identity; :class:`~cbtgym.backends.base.Sampling`
    its ``cache_key()``; dataclasses (profiles, configs) their fields; callables their qualified name;
    an in-process model its type and ``name_or_path``. Other objects (patients, reward functions) give
    their type plus the public attributes that configure them: backends, samplings, dataclasses,
    strings and flags. Their numbers are left out, since on such objects they are mostly state
    (call counters, timings) that differs between a run and its resume.
    """
    if isinstance(obj, str) and len(obj) > _LONG_TEXT:
        return text_digest(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {str(k): settings_value(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [settings_value(v, _depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((settings_value(v, _depth + 1) for v in obj), key=repr)
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    describe = getattr(obj, "describe", None)
    if callable(describe):
        return settings_value(describe(), _depth + 1)
    cache_key = getattr(obj, "cache_key", None)
    if callable(cache_key):
        return settings_value(cache_key(), _depth + 1)
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if hasattr(obj, "parameters") and hasattr(obj, "config"):  # a torch model: weights are not settings
        return {"type": kind, "name_or_path": str(getattr(obj, "name_or_path", ""))}
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    if _depth >= _MAX_DEPTH:
        return kind
    if dataclasses.is_dataclass(obj):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
        return {"type": kind, **{k: settings_value(v, _depth + 1) for k, v in fields.items()}}
    public = {k: v for k, v in vars(obj).items() if not k.startswith("_")} if hasattr(obj, "__dict__") else {}
    configuring = {k: v for k, v in public.items() if _configures(v)}
    return {"type": kind, **{k: settings_value(v, _depth + 1) for k, v in sorted(configuring.items())}}


def _configures(value: Any) -> bool:
    if isinstance(value, (bool, str)) or value is None:
        return True
    if isinstance(value, (int, float)):
        return False
    return callable(getattr(value, "describe", None)) or callable(getattr(value, "cache_key", None)) \
        or dataclasses.is_dataclass(value)


def check_resume(path: str | Path, settings: Mapping[str, Any], *, fresh: bool = False,
                 fresh_hint: str = FRESH_HINT) -> bool:
    """Make ``path`` safe to append to with ``settings``; call it before reading which keys are done.

    A new or empty file gets its sidecar written now. An existing file resumes when its sidecar holds
    the same settings. With ``fresh`` an existing file (and sidecar) is moved to ``<file>.bak`` and a
    new one started.

    Args:
        path: The resumable JSONL file.
        settings: What shapes its records (JSON-able after :func:`settings_value`).
        fresh: Start a new file instead of resuming.
        fresh_hint: How the caller's user starts a new file, for the error message.

    Returns:
        True when existing records are resumed, False when the file starts empty.

    Raises:
        ResumeMismatch: The file was written with other settings (or before settings were recorded).
        ValueError: A setting holds the value of a secret-looking environment variable.
    """
    path = Path(path)
    side = sidecar_path(path)
    new = settings_value(settings)
    _refuse_secrets(new)
    has_records = path.exists() and path.stat().st_size > 0
    if fresh and (has_records or side.exists()):
        if path.exists():
            os.replace(path, path.with_name(path.name + ".bak"))
        if side.exists():
            os.replace(side, sidecar_path(path.with_name(path.name + ".bak")))
        has_records = False
    if has_records:
        if not side.exists():
            raise ResumeMismatch(path, {"settings file": (f"absent ({side.name})", "recorded")}, fresh_hint)
        old = _read_sidecar(side)
        differences = _differences(old, new)
        if differences:
            raise ResumeMismatch(path, differences, fresh_hint)
        return True
    _write_sidecar(side, new)
    return False


def resume_keys(path: str | Path, settings: Mapping[str, Any], *, key: str = "key", fresh: bool = False,
                fresh_hint: str = REMOVE_HINT) -> set[str]:
    """The ``key`` values already in ``path``, after :func:`check_resume` has made sure they were
    written with ``settings`` (the resumable jobs' one call before choosing what is left to run)."""
    from .jsonl import done_keys

    check_resume(path, settings, fresh=fresh, fresh_hint=fresh_hint)
    return done_keys(path, key)


def _read_sidecar(side: Path) -> dict[str, Any]:
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        return data["settings"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{side}: not a settings file written by cbtgym ({type(e).__name__}: {e}); "
                         "restore it or start a new output") from None


def _write_sidecar(side: Path, settings: Any) -> None:
    side.parent.mkdir(parents=True, exist_ok=True)
    tmp = side.with_name(side.name + ".tmp")
    record = {"fingerprint": fingerprint(settings), "settings": settings}
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, side)  # a killed writer leaves the old sidecar or the new one, never half of one


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "settings": value}


def _differences(old: Any, new: Any) -> dict[str, tuple[Any, Any]]:
    a, b = _flatten(old), _flatten(new)
    missing = "(not set)"
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)}


def _refuse_secrets(settings: Any) -> None:
    secrets = {v for k, v in os.environ.items() if any(m in k.upper() for m in SECRET_MARKERS) and len(v) >= 8}
    if not secrets:
        return
    for name, value in _flatten(settings).items():
        if isinstance(value, str) and any(s in value for s in secrets):
            raise ValueError(f"setting {name!r} holds the value of a secret environment variable; "
                             "settings files are plain text, so pass the secret by the variable's name instead")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
