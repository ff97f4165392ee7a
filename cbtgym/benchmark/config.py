"""The benchmark's config: every field is a ``--flag`` of train/benchmark.py and a key of configs/benchmark/*.yaml.

Backend fields (``therapist``, ``patient``, the judges) take a spec string or a dict, which ``HfArgumentParser``
cannot type, so the benchmark is parsed by :func:`cbtgym.training.config.parse_config` (strict YAML, one-line
errors) rather than ``TrlParser``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.config import ConfigError

DEFAULT_VARIANTS = [
    {"name": "naive", "prompt": "naive"},
    {"name": "llm4cbt", "prompt": "llm4cbt"},
    {"name": "cbt_llm", "prompt": "cbt_llm"},
    {"name": "course", "prompt": "course"},
    {"name": "brief", "prompt": "brief"},
    {"name": "sft", "prompt": "brief", "adapter": "outputs/sft-smollm2/adapter", "base": "brief", "optional": True},
    {"name": "dpo", "prompt": "brief", "adapter": "outputs/dpo-smollm2/adapter", "base": "brief", "optional": True},
    {"name": "grpo", "prompt": "brief", "adapter": "outputs/grpo-smollm2/adapter", "base": "brief", "optional": True},
]


@dataclass
class BenchmarkConfig:
    """Everything train/benchmark.py needs; each field is also a --flag."""

    output_dir: str = field(default="outputs/benchmark", metadata={"help": "where records, report.md, results.csv and plots go"})
    therapist: Any = field(default="embedded", metadata={"help": "backend spec of the therapist variants ('embedded', 'hf:DIR', 'vllm:DIR', 'openai:URL#MODEL', or a dict)"})
    variants: list = field(default_factory=lambda: [dict(v) for v in DEFAULT_VARIANTS],
                           metadata={"help": "therapists: {name, prompt, therapist?, adapter?, base?, optional?} each (prompt 'course' = Tahir's phase prompts)"})
    reference: str = field(default="naive", metadata={"help": "reference variant of the mixed-effects model"})
    protocols: list = field(default_factory=lambda: ["sessions", "courses", "crisis", "act_match"], metadata={"help": "protocols to run"})
    profiles: str = field(default="bank:test", metadata={"help": "profile source (held-out bank profiles, 'llm4cbt', a path)"})
    profile_limit: int = field(default=6, metadata={"help": "use the first N profiles (0: all)"})
    attitudes: str = field(default="both", metadata={"help": "'both' (active and passive), 'active' or 'passive'"})
    seeds: list = field(default_factory=lambda: [0], metadata={"help": "seeds per profile x attitude"})
    rounds: int = field(default=4, metadata={"help": "therapist turns per session (LLM4CBT: 4)"})
    patient: Any = field(default="embedded", metadata={"help": "backend spec of the LLM patient ('embedded': SmolLM2, sharing the therapists' model), or 'rule' (the rule-based patient)"})
    patient_max_new_tokens: int = field(default=32, metadata={"help": "tokens per LLM-patient turn"})
    patient_temperature: float = field(default=0.7, metadata={"help": "LLM-patient sampling temperature"})
    patient_ratings: str = field(default="end", metadata={"help": "when the LLM patient rates its satisfaction 0-100: 'end' (after the session's last reply; the report uses the last rating) or 'turn' (after each reply)"})
    patient_disclosure: str = field(default="gated", metadata={"help": "what the LLM patient may tell: 'gated' (each profile layer arrives as the therapist's questions reach it; small models such as SmolLM2) or 'free' (the whole profile up front; capable models, the Llama 3.1 configs)"})
    max_new_tokens: int = field(default=40, metadata={"help": "tokens per therapist turn"})
    temperature: float = field(default=0.0, metadata={"help": "therapist temperature (0: greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "therapist top_p when sampling"})
    batch_size: int = field(default=96, metadata={"help": "sessions stepped together across variants sharing a model (one backend call per step)"})
    hf_batch_size: int = field(default=96, metadata={"help": "conversations decoded together by an hf model (length-sorted chunks of one call)"})
    course_sessions: int = field(default=2, metadata={"help": "sessions per patient in the course protocol"})
    course_patients: int = field(default=1, metadata={"help": "profiles in the course protocol (x attitudes = patients; 0: all)"})
    course_seed: int = field(default=0, metadata={"help": "seed of the course sessions"})
    summary_max_new_tokens: int = field(default=48, metadata={"help": "tokens of the therapist's session summary"})
    crisis_types: list = field(default_factory=lambda: ["suicidal_ideation", "psychosis", "mania", "means_request"],
                               metadata={"help": "crisis types of the probes (Moore et al.)"})
    crisis_per_type: int = field(default=2, metadata={"help": "probes per crisis type"})
    act_match_file: str = field(default="", metadata={"help": "JSONL/CSV of {patient, therapist} pairs ('' = the shipped example)"})
    act_match_limit: int = field(default=0, metadata={"help": "use the first N pairs (0: all)"})
    act_labeler: Any = field(default="embedded", metadata={"help": "'embedded' (MiniLM classifier) or a backend spec (LLM classifier)"})
    at_judge: Any = field(default="embedding", metadata={"help": "'embedding' or a backend spec (LLM estimate + match)"})
    safety_judge: Any = field(default="embedded", metadata={"help": "'embedded', 'rules' or a backend spec"})
    ctrs_judge: Any = field(default=None, metadata={"help": "backend spec of a capable CTRS judge (none: no CTRS; the report says so)"})
    ctrs_variant: str = field(default="standard", metadata={"help": "'standard' (0-6) or 'tahir' (word ratings)"})
    ctrs_max_new_tokens: int = field(default=1024, metadata={"help": "tokens of one CTRS rating"})
    judge_max_new_tokens: int = field(default=0, metadata={"help": "token budget of the act, AT and safety LLM judges (0: their defaults)"})
    judge_attempts: int = field(default=2, metadata={"help": "attempts of an LLM judge before a parse failure"})
    judge_cache: bool = field(default=True, metadata={"help": "cache LLM judge calls in <output_dir>/judge_cache.sqlite"})
    seed: int = field(default=0, metadata={"help": "seed of sampled decoding"})
    wandb: bool = field(default=True, metadata={"help": "log to W&B (offline unless WANDB_MODE is set)"})
    # cbt_qa protocol (CBT-LLM's single-turn questions with reference answers; cbtgym/benchmark/cbt_qa.py)
    cbt_qa_file: str = field(default="", metadata={"help": "cbt_qa: JSONL/CSV of {id, question, reference} ('' = the shipped example)"})
    cbt_qa_limit: int = field(default=0, metadata={"help": "cbt_qa: use the first N questions (0: all)"})
    cbt_qa_max_new_tokens: int = field(default=160, metadata={"help": "cbt_qa: tokens of each answer"})
    cbt_qa_structure_judge: Any = field(default="embedded", metadata={"help": "cbt_qa: judge of the five answer parts, 'embedded' (MiniLM) or a backend spec (LLM judge)"})
    cbt_qa_rating_seed: int = field(default=0, metadata={"help": "cbt_qa: seed of the answer order in the human-rating sheet"})

    def __post_init__(self) -> None:
        for name in ("rounds", "course_sessions", "batch_size", "hf_batch_size", "max_new_tokens",
                     "summary_max_new_tokens", "ctrs_max_new_tokens", "judge_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)}); set --{name} 1 or more")
        for name in ("profile_limit", "course_patients", "crisis_per_type", "act_match_limit", "judge_max_new_tokens",
                     "patient_max_new_tokens", "patient_temperature", "temperature"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0 (got {getattr(self, name)}); set --{name} 0 or more")
        try:
            self.seeds = [int(s) for s in self.seeds]
        except (TypeError, ValueError):
            raise ConfigError(f"seeds: {self.seeds!r} are not all integers; give e.g. --seeds 0,1,2") from None
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p: must be in (0, 1] (got {self.top_p})")
        if self.patient_disclosure not in ("gated", "free"):
            raise ConfigError(f"patient_disclosure: {self.patient_disclosure!r} is not 'gated' or 'free'; set one of them")
        if self.patient_ratings not in ("end", "turn"):
            raise ConfigError(f"patient_ratings: {self.patient_ratings!r} is not 'end' or 'turn'; set one of them")
        if self.cbt_qa_limit < 0:
            raise ConfigError(f"cbt_qa_limit: must be >= 0 (got {self.cbt_qa_limit}); 0 uses every question")
        if self.cbt_qa_max_new_tokens < 1:
            raise ConfigError(f"cbt_qa_max_new_tokens: must be >= 1 (got {self.cbt_qa_max_new_tokens}); answers need 120 or more")
        if self.cbt_qa_file and not Path(self.cbt_qa_file).is_file():
            raise ConfigError(f"cbt_qa_file: {self.cbt_qa_file} does not exist; give a JSONL/CSV of id, question, reference or '' for the example")
        if not isinstance(self.cbt_qa_structure_judge, (str, dict)) or not self.cbt_qa_structure_judge:
            raise ConfigError(f"cbt_qa_structure_judge: {self.cbt_qa_structure_judge!r} is not 'embedded' or a backend spec")
        if self.ctrs_variant not in ("standard", "tahir"):
            raise ConfigError(f"ctrs_variant: {self.ctrs_variant!r} is not 'standard' or 'tahir'; set one of them")

    def check(self) -> None:
        """Everything the run plan needs (protocols, variants, reference, profiles, probes, act pairs), before any
        model loads."""
        from .runner import plan

        try:
            plan(self)
        except (ValueError, OSError) as e:
            raise ConfigError(" ".join(str(e).split())) from None
