"""Start vLLM's OpenAI-compatible server (``vllm serve``) for a local model and stop it again.

Patients and judges then talk to it through the ``openai:`` backend, from any number of processes, while
the policy trains elsewhere::

    with VLLMServer("/models/Llama-3.1-70B-Instruct", port=8000) as url:      # or: vllm serve ... yourself
        judge = make_backend(f"openai:{url}#{VLLMServer.MODEL_NAME}")

The server runs with the engine options :class:`~cbtgym.backends.vllm_engine.VLLMBackend` uses on this
machine (:func:`~cbtgym.backends.vllm_engine.engine_options`: on a CPU eager mode, unchunked prefill,
float32 without native bfloat16, every core for the worker), so a served model answers as the in-process
engine does. The server's output goes to ``log_path`` (default: a temporary file), named in errors.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .base import BackendError
from .vllm_engine import engine_options


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer:
    """``vllm serve MODEL`` in a child process, as a context manager that yields the API's base URL.

    Args:
        model: A local model folder (nothing is downloaded).
        host / port: Where to listen (default: 127.0.0.1 and a free port).
        max_model_len / gpu_memory_utilization / dtype / seed: As for :class:`VLLMBackend`.
        startup_timeout: Seconds to wait for ``/v1/models`` to answer.
        log_path: Where the server's stdout and stderr go.
        **engine_kwargs: More engine arguments, as ``--flag value`` (True: ``--flag``, False: ``--no-flag``).
    """

    #: The name the model is served under (the ``#MODEL`` of an ``openai:`` spec).
    MODEL_NAME = "served"

    def __init__(self, model: str | Path, *, host: str = "127.0.0.1", port: int | None = None, max_model_len: int = 4096,
                 gpu_memory_utilization: float = 0.3, dtype: str = "auto", seed: int = 0, startup_timeout: float = 600,
                 log_path: str | Path | None = None, **engine_kwargs: Any) -> None:
        self.model, self.host, self.port = str(model), host, port or free_port(host)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")[1])
        dtype, engine_kwargs, self.env = engine_options(dtype, engine_kwargs)
        self.argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                     "--served-model-name", self.MODEL_NAME, "--host", host, "--port", str(self.port),
                     "--max-model-len", str(max_model_len), "--gpu-memory-utilization", str(gpu_memory_utilization),
                     "--dtype", dtype, "--seed", str(seed), *_flags(engine_kwargs)]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start the server and wait until it answers; returns its base URL."""
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendError(f"vllm serve exited with code {self.proc.returncode} during start-up; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/models", timeout=5).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(2)
        self.stop()
        raise BackendError(f"vllm serve did not answer within {self.startup_timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _flags(options: dict[str, Any]) -> list[str]:
    """Engine arguments as ``vllm serve`` flags."""
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out
