"""Build a backend from a short string or a config dict (what CLIs and YAML configs hold)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .base import Backend

ACCEPTED_FORMS = (
    'a Backend instance; "embedded" (SmolLM2-135M-Instruct on transformers); "scripted"; '
    '"hf:<model dir or name>"; "vllm:<model dir or name>" or "vllm:embedded"; '
    '"openai:<base_url>#<model>" (e.g. "openai:http://127.0.0.1:8000/v1#my-model"); '
    'or a dict {"type": "hf"|"vllm"|"openai"|"scripted", ...constructor arguments} '
    '(for hf/vllm, "model" defaults to the embedded model)'
)

EMBEDDED = "embedded"


def _model_path(model: Any) -> Any:
    """``"embedded"`` means the packaged SmolLM2 folder; anything else is passed through."""
    if model == EMBEDDED:
        from .embedded import embedded_model_dir

        return embedded_model_dir()
    return model


def _build(kind: str, kwargs: dict[str, Any]) -> Backend:
    if kind == "hf":
        from .hf import HFBackend

        return HFBackend(_model_path(kwargs.pop("model", EMBEDDED)), **kwargs)
    if kind == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend(_model_path(kwargs.pop("model", EMBEDDED)), **kwargs)
    if kind == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend(**kwargs)
    if kind == "scripted":
        from .scripted import ScriptedBackend

        return ScriptedBackend(**kwargs)
    raise ValueError(f"unknown backend type {kind!r}; accepted forms: {ACCEPTED_FORMS}")


def make_backend(spec: Backend | str | Path | Mapping[str, Any]) -> Backend:
    """A backend from ``spec``.

    Args:
        spec: One of: a :class:`Backend` (returned as is); ``"embedded"``; ``"scripted"``;
            ``"hf:<path>"``; ``"vllm:<path>"`` / ``"vllm:embedded"``; ``"openai:<base_url>#<model>"``;
            or a dict ``{"type": "hf"|"vllm"|"openai"|"scripted", **kwargs}`` whose other keys are
            the backend's constructor arguments (``model`` may be ``"embedded"``).

    Returns:
        The backend.

    Raises:
        ValueError: For a spec of none of these forms (the message lists them).
    """
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ValueError(f"backend dict {dict(spec)!r} has no 'type'; accepted forms: {ACCEPTED_FORMS}")
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        try:
            return _build(str(spec["type"]), kwargs)
        except TypeError as e:  # a misspelt key in a YAML config
            raise ValueError(f"backend dict of type {spec['type']!r}: {e}") from e
    if isinstance(spec, Path):
        spec = f"hf:{spec}"
    if not isinstance(spec, str):
        raise ValueError(f"backend spec must be a string, dict or Backend (got {type(spec).__name__}); "
                         f"accepted forms: {ACCEPTED_FORMS}")
    if spec == EMBEDDED:
        return _build("hf", {})
    if spec == "scripted":
        return _build("scripted", {})
    kind, sep, rest = spec.partition(":")
    if sep and rest and kind in ("hf", "vllm"):
        return _build(kind, {"model": rest})
    if sep and kind == "openai":
        base_url, hash_, model = rest.rpartition("#")
        if hash_ and base_url and model:
            return _build("openai", {"base_url": base_url, "model": model})
    raise ValueError(f"unknown backend spec {spec!r}; accepted forms: {ACCEPTED_FORMS}")


def is_spec_string(spec: str) -> bool:
    """Whether ``spec`` has one of the string forms :func:`make_backend` accepts (nothing is built or loaded, so
    configs can be checked before any model starts)."""
    kind, sep, rest = spec.partition(":")
    if spec in (EMBEDDED, "scripted") or (sep and rest and kind in ("hf", "vllm")):
        return True
    base_url, hash_, model = rest.rpartition("#")
    return bool(sep and kind == "openai" and hash_ and base_url and model)


def spec_identity(spec: str) -> str:
    """What a backend spec string names, without building the backend: the spec itself, with any
    ``openai:`` URL stripped of user info, query and fragment (where keys sometimes hide)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind == "openai":
        from .openai_http import redact_url

        base_url, hash_, model = rest.rpartition("#")
        if hash_ and base_url:
            return f"openai:{redact_url(base_url)}#{model}"
    return spec
