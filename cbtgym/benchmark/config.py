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
    max_new_tokens: int = field(default=32, metadata={"help": "tokens per therapist turn (32: what the checkpoints of train/ were trained and evaluated with)"})
    temperature: float = field(default=0.0, metadata={"help": "therapist temperature (0: greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "therapist top_p when sampling"})
    batch_size: int = field(default=96, metadata={"help": "sessions stepped together across variants sharing a model (one backend call per step)"})
    hf_batch_size: int = field(default=96, metadata={"help": "conversations decoded together by an hf model (length-sorted chunks of one call)"})
    prefix_cache_gb: float = field(default=6.0, metadata={"help": "key/value states kept per hf model for prompts that extend earlier ones (SmolLM2: ~46 KB a token; the default holds one turn of the default run's 72 sessions and their patient)"})
    course_sessions: int = field(default=2, metadata={"help": "sessions per patient in the course protocol"})
    course_patients: int = field(default=1, metadata={"help": "profiles in the course protocol (x attitudes = patients; 0: all)"})
    course_skip: list = field(default_factory=lambda: ["llm4cbt", "cbt_llm"], metadata={"help": "variants left out of the course protocol (default: the two single-session prompts, so courses compare naive, Tahir's phase prompts and the checkpoints with their base; [] runs every variant; names not among the variants are ignored)"})
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
    # -- refinement and transcript_rating (Witte et al.; cbtgym/benchmark/witte/) --
    refinement_client: Any = field(default="embedded", metadata={"help": "backend spec of the client LLM that answers and rates 0-100 (refinement, transcript_rating)"})
    refinement_expert: Any = field(default="embedded", metadata={"help": "backend spec of the expert LLM that gives feedback and revises replies"})
    refinement_exchanges: int = field(default=6, metadata={"help": "therapist-client exchanges per refinement run (Witte et al.: 6)"})
    refinement_runs: int = field(default=5, metadata={"help": "runs per variant and condition (run r: the r-th profile, cycling; paired across conditions)"})
    refinement_conditions: list = field(default_factory=lambda: ["expert", "generic", "none"],
                                        metadata={"help": "feedback conditions: 'expert' (the expert LLM's), 'generic' (a fixed sentence), 'none'"})
    refinement_variants: list = field(default_factory=list, metadata={"help": "variants that run refinement and transcript_rating ([]: all)"})
    refinement_client_max_new_tokens: int = field(default=48, metadata={"help": "tokens per client reply in refinement"})
    refinement_expert_max_new_tokens: int = field(default=64, metadata={"help": "tokens of the expert's feedback or revision"})
    transcript_file: str = field(default="", metadata={"help": "JSONL of real-session snippets for transcript_rating ('' = the shipped example)"})
    transcript_limit: int = field(default=0, metadata={"help": "use the first N snippets (0: all)"})
    # distortions protocol (cbtgym/benchmark/distortions.py): naming the cognitive distortions of a client's thought
    distortions_file: str = field(default="", metadata={"help": "labelled thoughts {text, labels} JSONL ('' = bench/data/distortions.jsonl; 'profiles' = the run's profiles' labelled automatic thoughts)"})
    distortions_limit: int = field(default=0, metadata={"help": "use N thoughts, evenly spaced over the set (0: all)"})
    distortions_max_new_tokens: int = field(default=48, metadata={"help": "tokens of a therapist's answer in the distortions protocol"})
    distortions_detector: Any = field(default="embedded", metadata={"help": "reference detector scored on the same thoughts: 'embedded', a backend spec (LLM detector) or 'none'"})
    prices: Any = field(default_factory=dict, metadata={"help": "US$ per million tokens per model: {model-or-spec: {input_per_1m, output_per_1m}} (empty: no money column; {embedded: {input_per_1m: 0, output_per_1m: 0}} shows local compute as $0)"})
    # -- protocol `stigma` (cbtgym/benchmark/stigma.py; Moore et al.)
    stigma_vignettes: str = field(default="", metadata={"help": "JSONL of {condition, vignette, id?, ...} ('' = the shipped 8; Moore et al.'s file reads as is)"})
    stigma_questions: str = field(default="", metadata={"help": "JSONL of {question_only, options, id?, kind?, stigmatising?} ('' = the shipped set)"})
    stigma_limit: int = field(default=0, metadata={"help": "vignettes used, taken in turn from each condition (0: all)"})
    stigma_repeats: int = field(default=1, metadata={"help": "times each vignette x question is asked (differs only when sampling)"})
    stigma_max_new_tokens: int = field(default=16, metadata={"help": "tokens of a stigma answer (a letter)"})
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
                     "patient_max_new_tokens", "patient_temperature", "temperature", "prefix_cache_gb"):
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
        # distortions protocol
        if self.distortions_limit < 0:
            raise ConfigError(f"distortions_limit: must be >= 0 (got {self.distortions_limit}); set --distortions_limit 0 (all) or more")
        if self.distortions_max_new_tokens < 1:
            raise ConfigError(f"distortions_max_new_tokens: must be >= 1 (got {self.distortions_max_new_tokens}); set 1 or more")
        from .costs import check_prices

        self.prices = check_prices(self.prices)
        # -- protocol `stigma`
        for name in ("stigma_vignettes", "stigma_questions"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ConfigError(f"{name}: {getattr(self, name)} is not a file; give a JSONL path or '' for the shipped set")
        if self.stigma_limit < 0:
            raise ConfigError(f"stigma_limit: must be >= 0 (got {self.stigma_limit}); 0 uses every vignette")
        for name in ("stigma_repeats", "stigma_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)}); set --{name} 1 or more")
        self._check_witte()

    def _check_witte(self) -> None:
        """The refinement and transcript_rating fields (Witte et al.)."""
        from .witte.conditions import CONDITIONS

        for name in ("refinement_exchanges", "refinement_runs", "refinement_client_max_new_tokens", "refinement_expert_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)}); set --{name} 1 or more")
        if self.transcript_limit < 0:
            raise ConfigError(f"transcript_limit: must be >= 0 (got {self.transcript_limit}); set --transcript_limit 0 or more")
        conds = self.refinement_conditions
        if isinstance(conds, str) or not conds or any(c not in CONDITIONS for c in conds) or len(set(conds)) < len(conds):
            raise ConfigError(f"refinement_conditions: {conds!r} must be a non-empty list of distinct conditions from "
                              f"{list(CONDITIONS)}, e.g. --refinement_conditions expert,none")
        names = [v if isinstance(v, str) else v.get("name") for v in self.variants] if isinstance(self.variants, list) else []
        unknown = [v for v in self.refinement_variants if v not in names]
        if isinstance(self.refinement_variants, str) or unknown:
            raise ConfigError(f"refinement_variants: {unknown or self.refinement_variants!r} not among the variants {names}; "
                              "name some of them, or give [] for all")

    def check(self) -> None:
        """Everything the run plan needs (protocols, variants, reference, profiles, probes, act pairs), before any
        model loads."""
        from .runner import plan

        try:
            plan(self)
        except (ValueError, OSError) as e:
            raise ConfigError(" ".join(str(e).split())) from None
