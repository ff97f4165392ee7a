"""Load the therapist policy (base model, optional LoRA) for rollouts and training."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_model_path(model: str) -> str:
    """``"embedded"`` means the cached HF folder of SmolLM2-135M-Instruct; anything else is a path or hub id."""
    if model == "embedded":
        from ..backends.embedded import embedded_model_dir

        return str(embedded_model_dir())
    return model


def load_policy(model: str, *, adapter: str | None = None, load_in_4bit: bool = False, dtype: str = "auto"):
    """Model and tokenizer; ``adapter`` applies a saved LoRA; ``load_in_4bit`` is QLoRA's base (GPU only)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    kwargs: dict[str, Any] = {}
    if dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    elif torch.cuda.is_available():
        kwargs["dtype"] = torch.bfloat16
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        from .ranks import Shard

        shard = Shard.current()
        kwargs["device_map"] = {"": shard.device()} if shard.count > 1 else "auto"
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model_obj = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(f"adapter {adapter} has no adapter_config.json: give a directory saved by train/dpo.py")
        model_obj = PeftModel.from_pretrained(model_obj, adapter)
    if torch.cuda.is_available() and not load_in_4bit:
        from .ranks import Shard

        model_obj = model_obj.to(Shard.current().device())  # each process its own GPU under a launcher
    return model_obj, tokenizer


def lora_config(model, r: int, alpha: int, dropout: float = 0.0, top_layers: int = 0, *,
                target_modules: list[str] | str | None = None, task_type: str = "CAUSAL_LM", **options: Any):
    """LoRA on every linear layer of the decoder (or ``target_modules``), or (``top_layers`` > 0) of its top
    layers only; ``options`` go to ``peft.LoraConfig`` (``use_rslora``, ``use_dora``, ``modules_to_save``).

    Restricting LoRA to the top layers stops the backward pass there, which is most of the
    saving that matters on a CPU.
    """
    from peft import LoraConfig

    options = {k: v for k, v in options.items() if v}  # unset ModelConfig options keep peft's defaults
    if top_layers <= 0:
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or "all-linear",
                          task_type=task_type, **options)
    n = model.config.num_hidden_layers
    if top_layers > n:
        raise ValueError(f"lora_layers={top_layers} but the model has {n} layers; use 0 (all) or at most {n}")
    linear = target_modules or sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                                       if type(mod).__name__ == "Linear" and ".layers." in name})
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=linear, task_type=task_type,
                      layers_to_transform=list(range(n - top_layers, n)), **options)


def lora_from_model_config(model, model_args, top_layers: int = 0):
    """:func:`lora_config` from TRL's ``ModelConfig`` (``--lora_r``, ``--lora_alpha``, ``--lora_dropout``,
    ``--lora_target_modules``, ``--use_rslora``, ``--use_dora``, ``--lora_modules_to_save``)."""
    return lora_config(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, top_layers,
                       target_modules=model_args.lora_target_modules, use_rslora=model_args.use_rslora,
                       use_dora=model_args.use_dora, modules_to_save=model_args.lora_modules_to_save,
                       task_type=model_args.lora_task_type)


class RolloutPolicy:
    """The policy's backend for each rollout phase: the in-process model (``"hf"``), or one vLLM engine for the
    whole run that swaps in the trained adapter (``"vllm"``: started on first use, stopped by :meth:`close`)."""

    def __init__(self, kind: str, model: str, tokenizer, *, batch_size: int, max_lora_rank: int):
        if kind not in ("hf", "vllm"):
            raise ValueError(f"rollout_backend must be 'hf' or 'vllm' (got {kind!r})")
        self.kind, self.model, self.tokenizer = kind, model, tokenizer
        self.batch_size, self.max_lora_rank = batch_size, max_lora_rank
        self._vllm = None

    def backend(self, model_obj=None, adapter: str | None = None):
        """A backend serving ``model_obj`` (hf) or the base model with ``adapter`` (vllm)."""
        from ..backends import HFBackend, make_backend
        from ..backends.hf import DEFAULT_PREFIX_CACHE_GB

        if self.kind == "hf":
            # Each backend serves one phase (eval, collection, eval) whose weights stay fixed: states can be reused.
            return HFBackend(model_obj, self.tokenizer, batch_size=self.batch_size, prefix_cache_gb=DEFAULT_PREFIX_CACHE_GB)
        if self._vllm is None:
            self._vllm = make_backend({"type": "vllm", "model": resolve_model_path(self.model), "enable_lora": True,
                                       "max_lora_rank": self.max_lora_rank})
        self._vllm.set_adapter(adapter)
        return self._vllm

    def close(self) -> None:
        if self._vllm is not None:
            self._vllm.close()
        self._vllm = None
