"""transformers engine behind the batched :class:`~cbtgym.backends.base.Backend` interface.

It runs anywhere torch runs (CPU or GPU) and can wrap a model that is already loaded, so a trainer
rolls out with the very policy (a peft model included) it is training.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import Backend, BackendError, Sampling, apply_stop, is_prefill
from .gqa_attention import gqa_attention
from .kv_decoding import KVDecoder, applies as kv_decoding_applies
from .prefix_cache import PrefixCache

#: Prefix cache budget of a model HFBackend loads itself (SmolLM2-135M: ~46 KB a token, ~45k tokens: a batch of
#: 16 sessions of ~700 tokens with room to spare; each GB here is a GB of peak RSS in the DPO default).
DEFAULT_PREFIX_CACHE_GB = 2.0

#: Decoding loops HFBackend can run (``engine=``): cbtgym's own (:mod:`~cbtgym.backends.kv_decoding`), transformers'
#: ``generate()`` with its own cache, and transformers' continuous batching (``generate_batch``, paged attention).
ENGINES = ("kv", "generate", "continuous")


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """The torch dtype to load weights in: float32 on CPU (bf16 matmuls are slow there), else the config's."""
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"HFBackend(dtype={dtype!r}) is not a torch dtype; use e.g. 'float32' or 'bfloat16'")
    return dtype


def _paged_cache_for(inputs: list[list[int]], max_new_tokens: int, page_size: int = 256) -> dict[str, int]:
    """A paged cache that holds exactly these requests.

    Unsized, transformers fills 90% of the machine's RAM less this process's own (on CPU it cannot see
    other processes): 21 GB for one 16-token reply, the likely cause of a CI test worker's death.
    """
    prompts = [len(x) for x in inputs]
    return {"page_size": page_size, "num_blocks": sum(-(-(n + max_new_tokens) // page_size) for n in prompts),
            # one prefill step never needs more than every prompt at once; the longest must fit in one
            "max_batch_tokens": max(max(prompts), min(sum(prompts), 2048))}


class HFBackend(Backend):
    """Batched chat generation with transformers.

    Prompts are built with the tokenizer's chat template (a new assistant turn, or the final assistant
    message continued when it is a prefill), padded on the
    left and generated ``batch_size`` at a time. Sampled decoding with ``Sampling.seed`` is reproducible
    and leaves torch's global random state untouched.

    Args:
        model: A model folder or name (loaded with ``AutoModelForCausalLM``), or an already loaded
            ``PreTrainedModel`` / peft model, used as is (not moved, not copied).
        tokenizer: The tokenizer; loaded from ``model`` when omitted.
        device: ``"cpu"``, ``"cuda"``, ...; default: a GPU when one is visible. Ignored for a loaded model.
        dtype: Weight dtype for a model loaded here; default float32 on CPU, the config's dtype elsewhere.
        batch_size: Conversations per forward batch.
        adapter: A LoRA adapter folder to apply on top of the model (needs peft).
        prefix_cache_gb: Memory for the key/value states of earlier prompts, so a prompt that extends one
            (the next turn of a session) reads only its new tokens (:mod:`~cbtgym.backends.prefix_cache`).
            Default: 4 GB for a model loaded here; off (0) for a model handed in, whose weights its
            owner (a trainer) may change between calls: pass a size only when they stay fixed.
        engine: The decoding loop, one of :data:`ENGINES`: ``"kv"`` (default where it applies: prompts read
            alone from the prefix cache, in-place cache buffers), ``"generate"`` (transformers'
            ``model.generate`` on left-padded chunks) or ``"continuous"`` (transformers' continuous
            batching). ``bench/rollout_throughput.py`` measures them against each other.

    Attributes:
        model: The (possibly peft-wrapped) model generating the text.
        tokenizer: Its tokenizer.
    """

    supports_json_schema = False

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 16,
        adapter: str | Path | None = None,
        prefix_cache_gb: float | None = None,
        engine: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"HFBackend(batch_size=...) must be >= 1 (got {batch_size})")
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"HFBackend(engine={engine!r}) is not an engine; use one of {', '.join(ENGINES)}")
        self._engine_choice = engine
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.batch_size = batch_size
        if isinstance(model, (str, Path)):
            source = str(model)
            path = Path(source).expanduser()
            if not path.exists() and (path.is_absolute() or source.startswith((".", "~"))):
                raise BackendError(f"HFBackend could not load a model from {source!r}: no such folder")
            self.device = device or default_device()
            try:
                self.model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype, self.device))
            except OSError as e:
                raise BackendError(f"HFBackend could not load a model from {source!r}: {e}") from e
            self.model.to(self.device)
        else:
            self.model = model
            source = getattr(model, "name_or_path", None) or type(model).__name__
            self.device = str(next(model.parameters()).device)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError) as e:
                raise BackendError(
                    f"HFBackend could not load a tokenizer from {source!r}; pass tokenizer=... ({e})"
                ) from e
        self.tokenizer = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(f"the tokenizer of {source!r} has no chat template; HFBackend needs a chat model")
        self.source = source
        if prefix_cache_gb is None:
            prefix_cache_gb = DEFAULT_PREFIX_CACHE_GB if isinstance(model, (str, Path)) else 0.0
        if prefix_cache_gb < 0:
            raise ValueError(f"HFBackend(prefix_cache_gb=...) must be >= 0 (got {prefix_cache_gb})")
        self.prefix_cache = PrefixCache(int(prefix_cache_gb * 2**30)) if prefix_cache_gb > 0 else None
        self.adapter: str | None = None
        self._set_decoder()
        if adapter is not None:
            self.load_adapter(adapter)
        self.name = self._make_name()

    def _set_decoder(self) -> None:
        """The decoding loop for the current model, with a cache emptied of old weights' states."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        fits = kv_decoding_applies(self.model)
        if self._engine_choice == "kv" and not fits:
            raise BackendError(f"HFBackend(engine='kv') does not handle {type(self.model).__name__}'s cache "
                               "(sliding-window or linear-attention layers); use engine='generate'")
        self.engine = self._engine_choice or ("kv" if fits else "generate")
        self._decoder = KVDecoder(self.model, self.prefix_cache) if self.engine == "kv" else None

    def _make_name(self) -> str:
        return f"hf:{self.source}" + (f"+lora:{self.adapter}" if self.adapter else "")

    def load_adapter(self, path: str | Path) -> None:
        """Wrap the model with the LoRA adapter saved in ``path`` (peft)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise BackendError(f"{path} is not a LoRA adapter folder (no adapter_config.json)")
        self.model = PeftModel.from_pretrained(self.model, str(path))
        self.model.eval()
        self.adapter = str(path)
        self.name = self._make_name()
        self._set_decoder()

    # -- generation ------------------------------------------------------------------------------

    def _eos_ids(self) -> list[int]:
        """Every token that ends a reply: the generation config's EOS ids plus the tokenizer's."""
        ids: list[int] = []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for tok in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [self.tokenizer.eos_token_id]:
            if tok is not None and tok not in ids:
                ids.append(tok)
        if not ids:
            raise BackendError(f"{self.name}: neither the model nor the tokenizer defines an EOS token")
        return ids

    def _generation_config(self, sampling: Sampling, eos_ids: list[int], pad_id: int) -> Any:
        from transformers import GenerationConfig

        kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            use_cache=True,  # trainers often turn the cache off for gradient checkpointing
        )
        if sampling.greedy:
            kwargs.update(do_sample=False)
        else:
            # top_k=0: only temperature and top_p shape the distribution, as in the other engines.
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs["stop_strings"] = list(sampling.stop)
        return GenerationConfig(**kwargs)

    def prompts(self, conversations: Sequence[Sequence[dict[str, str]]]) -> list[str]:
        """The chat-template text each conversation is continued from."""
        return [
            self.tokenizer.apply_chat_template(
                list(c), tokenize=False, add_generation_prompt=not is_prefill(c), continue_final_message=is_prefill(c)
            )
            for c in conversations
        ]

    def _generate(self, conversations, sampling):
        prompts = self.prompts(conversations)
        eos_ids = self._eos_ids()
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0]
        config = self._generation_config(sampling, eos_ids, pad_id)
        # Identical prompts (k candidates for one state) are read once; chunks hold prompts of similar length.
        unique = sorted(dict.fromkeys(prompts), key=len)
        rows_of: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            rows_of.setdefault(p, []).append(i)
        texts: list[str] = [""] * len(prompts)
        tokens = 0
        with self._inference(sampling.seed if not sampling.greedy else None):
            for start in range(0, len(unique), self.batch_size):
                chunk = unique[start : start + self.batch_size]
                rows = [i for p in chunk for i in rows_of[p]]
                copies = [len(rows_of[p]) for p in chunk]
                for i, row in zip(rows, self._generate_rows(chunk, copies, sampling, config)):
                    used = _completion_length(row, eos_ids)
                    tokens += used
                    text = self.tokenizer.decode(row[:used], skip_special_tokens=True)
                    texts[i] = apply_stop(text, sampling.stop)
        return texts, tokens

    def _generate_rows(self, chunk: list[str], copies: list[int], sampling: Sampling, config: Any) -> list[list[int]]:
        """Token ids generated for each prompt of ``chunk`` repeated ``copies[j]`` times (rows in that order)."""
        # The template already holds the special tokens.
        if self.engine == "continuous":
            return self._generate_continuous(chunk, copies, config, sampling)
        if self._decoder is None:
            # Left padding keeps every prompt's end next to its first generated token.
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=False).to(self.model.device)
            return self._generate_chunk(enc, copies, config).tolist()
        import torch

        ids = [torch.tensor(x, device=self.model.device) for x in self.tokenizer(chunk, add_special_tokens=False)["input_ids"]]
        stopped = None
        if sampling.stop:
            def stopped(row: list[int]) -> bool:
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                return any(s in text for s in sampling.stop)
        return self._decoder.generate(ids, copies, sampling.max_new_tokens, sampling.temperature, sampling.top_p,
                                      config.eos_token_id, config.pad_token_id, stopped)

    def _generate_chunk(self, enc: Any, copies: list[int], config: Any) -> Any:
        """New tokens for each prompt of ``enc`` repeated ``copies[j]`` times (rows in that order)."""
        import torch

        ids, mask = enc["input_ids"], enc["attention_mask"]
        if max(copies) == 1 or ids.shape[1] < 2:
            return self.model.generate(**enc, generation_config=config, tokenizer=self.tokenizer)[:, ids.shape[1] :]
        # Prefill each distinct prompt but its last token once, then fan the cache out to its copies;
        # generate() feeds the last token against the cache, positions from the attention mask as usual.
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        prefix = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                            use_cache=True)
        index = torch.repeat_interleave(torch.arange(len(copies), device=ids.device),
                                        torch.tensor(copies, device=ids.device))
        cache = prefix.past_key_values
        cache.batch_select_indices(index)
        out = self.model.generate(input_ids=ids[index], attention_mask=mask[index], past_key_values=cache,
                                  generation_config=config, tokenizer=self.tokenizer)
        return out[:, ids.shape[1] :]

    def _generate_continuous(self, chunk: list[str], copies: list[int], config: Any, sampling: Sampling) -> list[list[int]]:
        """Rows for ``chunk`` from transformers' continuous batching (one request per row, in row order)."""
        from transformers import ContinuousBatchingConfig

        ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        inputs = [ids[j] for j, c in enumerate(copies) for _ in range(c)]
        cb_config = ContinuousBatchingConfig(seed=None if sampling.greedy else sampling.seed,
                                             **_paged_cache_for(inputs, sampling.max_new_tokens))
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        results = base.generate_batch(inputs=inputs, generation_config=config, continuous_batching_config=cb_config,
                                      progress_bar=False)
        failed = [r.error for r in results.values() if r.error]
        if failed or len(results) != len(inputs):
            raise BackendError(f"{self.name}: continuous batching returned {len(results)} of {len(inputs)} rows"
                               + (f" ({failed[0]})" if failed else ""))
        # Request ids are "req_<n>" in the order the inputs were added.
        ordered = sorted(results.values(), key=lambda r: int(r.request_id.rsplit("_", 1)[-1]))
        return [list(r.generated_tokens) for r in ordered]

    @contextlib.contextmanager
    def _inference(self, seed: int | None) -> Iterator[None]:
        """Eval mode, no grad, copy-free GQA attention on CPU and (when seeded) a private RNG stream; all restored afterwards."""
        import torch

        was_training = self.model.training
        self.model.eval()
        devices = [self.model.device.index or 0] if self.model.device.type == "cuda" else []
        try:
            # The copy-free GQA attention belongs to the kv engine; the library engines run as shipped.
            attention = gqa_attention(self.model) if self.engine == "kv" else contextlib.nullcontext()
            # Continuous batching updates its static tensors in place from its own thread, which
            # inference-mode tensors forbid; no_grad is what it runs under itself.
            grad_off = torch.no_grad() if self.engine == "continuous" else torch.inference_mode()
            with grad_off, attention, \
                    torch.random.fork_rng(devices=devices, enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                yield
        finally:
            if was_training:
                self.model.train()

    def close(self) -> None:
        """Drop the model reference and the cached prompt states (a loaded model handed in stays alive with its owner)."""
        self.__dict__.pop("model", None)
        self._decoder = None  # it holds the model too
        if self.prefix_cache is not None:
            self.prefix_cache.clear()


def _completion_length(row: list[int], eos_ids: list[int]) -> int:
    """Generated tokens up to and including the first EOS (the rest is padding)."""
    eos = set(eos_ids)
    for i, tok in enumerate(row):
        if tok in eos:
            return i + 1
    return len(row)
