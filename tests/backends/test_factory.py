"""make_backend: every accepted form, and a clear error for the rest."""

from __future__ import annotations

import pytest

from cbtgym.backends import (
    Backend,
    HFBackend,
    OpenAIBackend,
    Sampling,
    ScriptedBackend,
    VLLMBackend,
    make_backend,
)
from cbtgym.backends.vllm_engine import VLLMBackend as VLLMBackendDirect


def test_a_backend_is_returned_as_is():
    backend = ScriptedBackend(["hi"])
    assert make_backend(backend) is backend


def test_scripted_forms():
    assert isinstance(make_backend("scripted"), ScriptedBackend)
    backend = make_backend({"type": "scripted", "replies": ["only reply"], "name": "s1"})
    assert backend.name == "s1"
    assert backend.generate([[{"role": "user", "content": "x"}]]) == ["only reply"]


def test_openai_forms():
    backend = make_backend("openai:http://127.0.0.1:8000/v1#my-model")
    assert isinstance(backend, OpenAIBackend)
    assert (backend.url, backend.model) == ("http://127.0.0.1:8000/v1/chat/completions", "my-model")
    backend = make_backend({"type": "openai", "base_url": "https://api.example.com/v1", "model": "m", "max_retries": 1})
    assert (backend.max_retries, backend.name) == (1, "openai:https://api.example.com/v1#m")


@pytest.mark.slow
def test_embedded_and_hf_forms(embedded_dir, embedded_hf):
    backend = make_backend("embedded")
    assert isinstance(backend, HFBackend) and backend.name == f"hf:{embedded_dir}"
    conv = [[{"role": "user", "content": "Say hello."}]]
    assert backend.generate(conv, Sampling(max_new_tokens=8)) == embedded_hf.generate(conv, Sampling(max_new_tokens=8))
    backend.close()
    # A dict can hand over a loaded model (no second load).
    backend = make_backend({"type": "hf", "model": embedded_hf.model, "tokenizer": embedded_hf.tokenizer, "batch_size": 2})
    assert backend.model is embedded_hf.model and backend.batch_size == 2


def test_vllm_is_exported_lazily():
    assert VLLMBackend is VLLMBackendDirect
    assert issubclass(VLLMBackend, Backend)


@pytest.mark.parametrize(
    "spec",
    ["nonsense", "hf:", "vllm:", "openai:http://127.0.0.1:8000/v1", "openai:#m", {"model": "x"}, {"type": "gguf"}, 42],
)
def test_unknown_specs_list_the_accepted_forms(spec):
    with pytest.raises(ValueError, match="accepted forms") as err:
        make_backend(spec)
    assert "openai:<base_url>#<model>" in str(err.value)


def test_misspelt_dict_key_is_named():
    with pytest.raises(ValueError, match="max_retrys"):
        make_backend({"type": "openai", "base_url": "http://x/v1", "model": "m", "max_retrys": 2})
