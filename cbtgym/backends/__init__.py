"""Text generators behind one batched interface (:class:`Backend`).

``make_backend("embedded" | "scripted" | "hf:DIR" | "vllm:DIR" | "openai:URL#MODEL" | {...})`` builds one.
vLLM is imported only when :class:`VLLMBackend` is first used.
"""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendError, Sampling
from .embedded import embedded_model_dir
from .factory import make_backend
from .hf import HFBackend
from .openai_http import OpenAIBackend
from .scripted import ScriptedBackend

__all__ = [
    "Backend",
    "BackendError",
    "HFBackend",
    "OpenAIBackend",
    "Sampling",
    "ScriptedBackend",
    "VLLMBackend",
    "embedded_model_dir",
    "make_backend",
]


def __getattr__(name: str) -> Any:
    # The module is cheap (vllm itself is imported in VLLMBackend.__init__), but keeping the
    # name lazy means `from cbtgym.backends import *` never touches vLLM code paths.
    if name == "VLLMBackend":
        from .vllm_engine import VLLMBackend

        return VLLMBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
