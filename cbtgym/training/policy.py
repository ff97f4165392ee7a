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
        kwargs["device_map"] = "auto"
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
        model_obj = model_obj.to("cuda")
    return model_obj, tokenizer


def lora_config(model, r: int, alpha: int, dropout: float = 0.0, top_layers: int = 0):
    """LoRA on every linear layer of the decoder, or (``top_layers`` > 0) of its top layers only.

    Restricting LoRA to the top layers stops the backward pass there, which is most of the
    saving that matters on a CPU.
    """
    from peft import LoraConfig

    if top_layers <= 0:
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    n = model.config.num_hidden_layers
    if top_layers > n:
        raise ValueError(f"lora_layers={top_layers} but the model has {n} layers; use 0 (all) or at most {n}")
    linear = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                     if type(mod).__name__ == "Linear" and ".layers." in name})
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=linear, task_type="CAUSAL_LM",
                      layers_to_transform=list(range(n - top_layers, n)))
