"""The therapists a benchmark compares, and the backends they run on.

A :class:`Variant` is a named therapist: a system prompt (a file of
``cbtgym/therapists/prompts/``, a ``.txt`` path, or ``"course"`` for Tahir's phase prompts) on
a backend, optionally with a LoRA adapter saved by ``train/dpo.py`` / ``train/sft.py`` /
``train/grpo.py`` (a checkpoint variant). In a YAML config::

    variants:
      - {name: naive, prompt: naive}
      - {name: course, prompt: course}
      - {name: dpo, prompt: brief, adapter: outputs/dpo-smollm2/adapter, base: brief, optional: true}

``base`` names the variant the checkpoint was trained from (same prompt, no adapter): the report
gives the paired difference between the two. ``optional`` variants whose adapter is missing are
skipped and the report says so.

:class:`BackendPool` loads each backend spec once and shares it between roles (therapist,
patient, judges); :class:`MeteredBackend` gives each role its own call and token counters even
when roles share one model.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..backends.base import Backend, BackendError, Sampling
from ..envs.course import PHASES, course_phase  # noqa: F401  (re-exported: the benchmark's phases are the env's)
from ..therapists import therapist_prompt

COURSE = "course"
PROMPTS_DIR = Path(__file__).with_name("prompts")


def protocol_prompt(name: str) -> string.Template:
    """A template of ``cbtgym/benchmark/prompts/`` (filled with ``$field`` placeholders)."""
    return string.Template((PROMPTS_DIR / name).read_text(encoding="utf-8").strip())


@dataclass(frozen=True)
class Variant:
    """One therapist of the benchmark.

    Attributes:
        name: Unique name (a column of every table; letters, digits, ``-`` and ``_``).
        prompt: Therapist prompt name or ``.txt`` path; ``"course"`` uses the phase prompts
            ``course_<phase>.txt`` (the assessment prompt outside a course).
        therapist: Backend spec of this variant (default: the benchmark's ``therapist``).
        adapter: LoRA adapter folder (a checkpoint variant).
        base: The variant it is compared with in paired contrasts (its starting point).
        optional: Skip the variant, instead of failing, when ``adapter`` does not exist.
    """

    name: str
    prompt: str = "naive"
    therapist: str | dict | None = None
    adapter: str | None = None
    base: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"variant name {self.name!r}: use letters, digits, '-' and '_' only")
        if self.prompt != COURSE:
            therapist_prompt(self.prompt)  # raises naming the known prompts

    @property
    def is_checkpoint(self) -> bool:
        return self.adapter is not None

    @property
    def available(self) -> bool:
        return self.adapter is None or (Path(self.adapter) / "adapter_config.json").is_file()

    def system_prompt(self, session: int = 1, sessions: int = 1, summary: str | None = None) -> str:
        """The therapist's system prompt for ``session`` of ``sessions``, with the previous summary when given."""
        text = therapist_prompt(f"course_{course_phase(session, sessions)}" if self.prompt == COURSE else self.prompt)
        if summary is None:
            return text
        return protocol_prompt("course_context.txt").substitute(
            phase_prompt=text, session=session, sessions=sessions, summary=summary.strip() or "(no summary)")


def parse_variants(raw: Sequence[Mapping[str, Any] | str], where: str = "variants") -> list[Variant]:
    """Variants from config entries (a dict per variant, or a bare prompt name); errors name the entry and field."""
    if isinstance(raw, (str, Mapping)) or not raw:
        raise ValueError(f"{where}: give a non-empty list of variants, e.g. [{{name: naive, prompt: naive}}]")
    known = {f.name for f in fields(Variant)}
    out: list[Variant] = []
    for i, entry in enumerate(raw):
        entry = {"name": entry, "prompt": entry} if isinstance(entry, str) else dict(entry)
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"{where}[{i}]: unknown field(s) {sorted(unknown)}; valid fields: {sorted(known)}")
        if "name" not in entry:
            raise ValueError(f"{where}[{i}]: 'name' is required")
        try:
            out.append(Variant(**entry))
        except ValueError as e:
            raise ValueError(f"{where}[{i}] ({entry['name']}): {e}") from None
    names = [v.name for v in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: variant names must be unique (repeated: {dupes})")
    for v in out:
        if v.base is not None and v.base not in names:
            raise ValueError(f"{where}: variant {v.name!r} has base {v.base!r}, which is not a variant; use one of {names}")
    return out


class MeteredBackend(Backend):
    """A view of a backend with its own counters: roles sharing one model are still counted apart.

    ``prompt_tokens`` counts what it was asked to read (the chat template applied; words without a tokenizer).
    """

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.supports_json_schema = inner.supports_json_schema
        self.prompt_tokens = 0

    def _generate(self, conversations, sampling: Sampling):
        from .costs import count_tokens

        self.prompt_tokens += sum(count_tokens(self.inner, conversations))
        before = self.inner.stats.completion_tokens
        texts = self.inner.generate(conversations, sampling)
        return texts, self.inner.stats.completion_tokens - before


class LoRAView(Backend):
    """A vLLM engine serving one LoRA adapter: variants share the engine, each call picks its adapter."""

    def __init__(self, engine: Backend, adapter: str) -> None:
        super().__init__()
        self.engine, self.adapter = engine, adapter
        self.name = f"{engine.name}+lora:{adapter}"
        self.supports_json_schema = engine.supports_json_schema

    def _generate(self, conversations, sampling: Sampling):
        previous = self.engine.adapter
        self.engine.set_adapter(self.adapter)
        try:
            before = self.engine.stats.completion_tokens
            texts = self.engine.generate(conversations, sampling)
            return texts, self.engine.stats.completion_tokens - before
        finally:
            self.engine.set_adapter(previous)


def spec_key(spec: Any) -> str:
    """A canonical string for a backend spec, so ``"embedded"`` and ``"hf:<embedded dir>"`` load once."""
    from ..backends.embedded import embedded_model_dir

    if isinstance(spec, Backend):
        return f"instance:{id(spec)}"
    if isinstance(spec, Mapping):
        return repr(sorted((k, str(v)) for k, v in spec.items()))
    spec = str(spec)
    if spec in ("embedded", f"hf:{embedded_model_dir()}"):
        return "hf:embedded"
    return spec


def _hf_model(spec: Any) -> str | None:
    """The model path of an hf spec (``"embedded"``, ``"hf:<dir>"``, ``{type: hf, model: ...}``), else None."""
    if spec == "embedded":
        return "embedded"
    if isinstance(spec, str) and spec.startswith("hf:"):
        return spec[3:]
    if isinstance(spec, Mapping) and spec.get("type") == "hf":
        return str(spec.get("model", "embedded"))
    return None


class BackendPool:
    """Builds each backend spec once per run; checkpoint variants get their adapted model.

    Args:
        hf_batch_size: Conversations per forward batch for hf backends built here.
        prefix_cache_gb: Prefix-cache budget of each hf backend built here (None: the backend's default). A
            benchmark steps every session of every variant together, and its patient shares the model: the
            cache must hold all their prompts of one turn, or each turn reads them all again.
    """

    def __init__(self, hf_batch_size: int = 16, prefix_cache_gb: float | None = None) -> None:
        self.hf_batch_size = hf_batch_size
        self.prefix_cache_gb = prefix_cache_gb
        self._backends: dict[str, Backend] = {}

    def register(self, spec: Any, backend: Backend) -> None:
        """Use an already loaded ``backend`` wherever ``spec`` is asked for."""
        self._backends[spec_key(spec)] = backend

    def get(self, spec: Any) -> Backend:
        """The backend of ``spec`` (built on first use; see :func:`cbtgym.backends.make_backend`)."""
        if isinstance(spec, Backend):
            return spec
        key = spec_key(spec)
        if key not in self._backends:
            from ..backends.factory import make_backend

            model = _hf_model(spec)
            if model is not None and not isinstance(spec, Mapping):
                spec = {"type": "hf", "model": model, "batch_size": self.hf_batch_size,
                        **({} if self.prefix_cache_gb is None else {"prefix_cache_gb": self.prefix_cache_gb})}
            self._backends[key] = make_backend(spec)
        return self._backends[key]

    def therapist(self, variant: Variant, default_spec: Any) -> Backend:
        """The backend ``variant`` speaks through (a merged LoRA model for hf, an adapter view for vLLM)."""
        spec = variant.therapist if variant.therapist is not None else default_spec
        if variant.adapter is None:
            return self.get(spec)
        key = f"{spec_key(spec)}+lora:{variant.adapter}"
        if key in self._backends:
            return self._backends[key]
        if not variant.available:
            raise FileNotFoundError(f"variant {variant.name!r}: adapter {variant.adapter} has no adapter_config.json; "
                                    "give a folder saved by train/dpo.py (or mark the variant optional: true)")
        model = _hf_model(spec)
        if model is not None:
            from ..backends.hf import DEFAULT_PREFIX_CACHE_GB, HFBackend
            from ..training.policy import load_policy

            policy, tokenizer = load_policy(model, adapter=variant.adapter)
            # Merged, the LoRA model generates at the base model's speed; its weights stay fixed, so states can be reused.
            backend: Backend = HFBackend(policy.merge_and_unload().eval(), tokenizer, batch_size=self.hf_batch_size,
                                         prefix_cache_gb=self.prefix_cache_gb or DEFAULT_PREFIX_CACHE_GB)
            backend.name = f"hf:{model}+lora:{variant.adapter}"
        else:
            engine = self.get(spec)
            if not hasattr(engine, "set_adapter"):
                raise BackendError(f"variant {variant.name!r}: backend {engine.name} cannot load a LoRA adapter; "
                                   "use an hf or vllm therapist (vllm with enable_lora: true), or serve the adapter "
                                   "in your server and name it in the variant's therapist spec")
            backend = LoRAView(engine, variant.adapter)
        self._backends[key] = backend
        return backend

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
