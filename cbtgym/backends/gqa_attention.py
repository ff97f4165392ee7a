"""Grouped-query attention without copying keys and values, for padded batches on CPU.

transformers' ``sdpa`` attention repeats every key/value head ``num_attention_heads / num_key_value_heads``
times whenever an attention mask is present (its rule for CUDA kernels), and a left-padded batch always
has one. On CPU that copy is most of a decode step: SmolLM2-135M (9 query heads, 3 KV heads) at batch 16
spent ~55% of decode time in it. torch's own SDPA takes ``enable_gqa=True`` with a mask on CPU and gives
bit-identical outputs, so :func:`gqa_attention` switches a model to it for the duration of generation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

NAME = "sdpa_gqa"
_registered = False


def _forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
             scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch.nn.functional as F

    # As transformers' sdpa: the causal flag only for a multi-token query with no explicit mask.
    causal = bool(query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                         scale=scaling, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, _forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True


def _base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def applies(model: Any) -> bool:
    """True for a CPU model using ``sdpa`` whose attention groups query heads over fewer KV heads."""
    base = _base_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    return bool(heads and kv_heads and kv_heads < heads and base.device.type == "cpu")


@contextlib.contextmanager
def gqa_attention(model: Any) -> Iterator[None]:
    """Within the block, ``model`` attends with :data:`NAME` when :func:`applies`; restored afterwards.

    Training forwards outside the block keep the model's own attention (and its backward).
    """
    if not applies(model):
        yield
        return
    _register()
    base = _base_model(model)
    base.set_attn_implementation(NAME)
    try:
        yield
    finally:
        base.set_attn_implementation("sdpa")
