"""cbtgym's own arguments of the training scripts, beside TRL's ``DPOConfig``/``SFTConfig``/``GRPOConfig`` and
``ModelConfig``, and the scripts' defaults for TRL fields.

Each script parses ``(XArguments, XConfig, ModelConfig)`` with :func:`cbtgym.training.config.parse_or_exit`:
TRL's options are TRL's fields (``--learning_rate``, ``--loss_type``, ``--lora_r``, ``--model_name_or_path``...),
the fields below are the sessions, the patient, the judge and the evaluation. ``XArguments.check(training_args,
model_args)`` validates the whole config (cbtgym's fields and the TRL fields the script relies on) before any
model loads; every error is a :class:`ConfigError` that starts with the field's name.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.composite_spec import FORMS as REWARD_FORMS

from .config import ConfigError

EVAL_ATTITUDES = ("both", "active", "passive", "profile")

# TRL's defaults that the scripts change: the embedded CPU runs (SmolLM2-135M + LoRA on 2 cores) as measured in
# the README. ``output_dir`` is the run folder (pairs, adapter, evals, results.json); checkpoints go below it.
_COMMON_DEFAULTS: dict[str, Any] = dict(
    model_name_or_path="embedded", dtype="auto", use_peft=True, lora_r=16, lora_alpha=32, lora_dropout=0.0,
    seed=0, bf16=False, save_total_limit=2, report_to=["wandb"])
DPO_DEFAULTS: dict[str, Any] = dict(
    _COMMON_DEFAULTS, output_dir="outputs/dpo-smollm2", learning_rate=1e-3, beta=0.1, loss_type=["sigmoid", "sft"],
    num_train_epochs=1.0, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_length=640,
    precompute_ref_log_probs=True, gradient_checkpointing=False, logging_steps=5, save_steps=25, lr_scheduler_type="constant_with_warmup",
    warmup_steps=2)
SFT_DEFAULTS: dict[str, Any] = dict(
    _COMMON_DEFAULTS, output_dir="outputs/sft-smollm2", learning_rate=2e-4, num_train_epochs=2.0, max_steps=-1,
    per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=640, completion_only_loss=True, gradient_checkpointing=False,
    logging_steps=5, save_steps=25)
# GRPO: one optimizer step = one generation batch of 8 whole sessions (2 groups of 4, 4 rounds of 32-token turns),
# trained in micro-batches of 2 sessions: a session is ~300 tokens, and 8 of them at once hold ~6 GB of activations.
# 6 steps: a step took ~140 CPU-s (one thread) on 2 shared cores, so training and the before/after eval fit 20 min.
GRPO_DEFAULTS: dict[str, Any] = dict(
    _COMMON_DEFAULTS, output_dir="outputs/grpo-smollm2", learning_rate=1e-4, beta=0.0, max_steps=4, eval_limit=8, heldout_limit=2,
    per_device_train_batch_size=2, gradient_accumulation_steps=4, num_generations=4, max_completion_length=32,
    temperature=1.0, logging_steps=1, save_steps=50, log_completions=False, gradient_checkpointing=False)


def _at_least(obj: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise ConfigError(f"{name}: must be >= {minimum:g} (got {value}); set --{name} {minimum:g} or more")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{name}: must be > 0 (got {value}); set --{name} to a positive value")


def _one_of(obj: Any, name: str, allowed: tuple) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {list(allowed)}; set --{name} to one of them")


def _accepted(config_cls: type, name: str, within: str = r"(.*)") -> tuple[str, ...]:
    """The quoted values TRL's help text of a field lists (in the part ``within`` matches), so that a TRL
    upgrade brings its new values with it."""
    help_text = next(f for f in dataclasses.fields(config_cls) if f.name == name).metadata["help"]
    part = re.search(within, help_text, re.S)
    return tuple(re.findall(r"'(\w+)'", part.group(1))) if part else ()


def _check_profiles(name: str, source: str) -> None:
    from ..profiles import load_profiles

    try:
        if not load_profiles(source):
            raise ValueError("no profiles")
    except (ValueError, OSError) as e:
        raise ConfigError(f"{name}: cannot load profiles {source!r} ({' '.join(str(e).split())}); use 'bank:train', "
                          f"'bank:test', 'llm4cbt' or a profile file/folder") from None


def _check_prompt(source: str) -> None:
    from ..therapists import therapist_prompt

    try:
        therapist_prompt(source)
    except (ValueError, OSError) as e:
        raise ConfigError(f"therapist_prompt: {e}") from None


def _check_reward(source: str, name: str = "reward") -> None:
    """The reward string names a reward; a composite one's config exists and its judge backend has a spec's form
    (no model loads here)."""
    from rewards.composite_spec import CompositeSpec, is_composite

    if source in ("rubric", "placeholder"):
        return
    if not is_composite(source):
        raise ConfigError(f"{name}: {source!r} is unknown; use 'rubric', 'placeholder' or {REWARD_FORMS}")
    try:
        CompositeSpec.parse(source)
    except (ValueError, OSError) as e:
        raise ConfigError(f"{name}: {e}") from None


def _check_patient(spec: str, name: str = "patient") -> None:
    """The patient's backend spec has one of the string forms ``make_backend`` accepts (no model loads here)."""
    from ..backends.factory import ACCEPTED_FORMS, is_spec_string

    if spec == "rule" or is_spec_string(spec):
        return
    raise ConfigError(f"{name}: {spec!r} is no patient; use 'rule' or a backend spec: {ACCEPTED_FORMS}")


def _check_lora(training_args: Any, model_args: Any) -> None:
    if not model_args.use_peft:
        raise ConfigError("use_peft: the scripts train a LoRA adapter (saved to <output_dir>/adapter); leave it true")
    if not model_args.model_name_or_path:
        raise ConfigError("model_name_or_path: empty; use 'embedded' (SmolLM2-135M-Instruct) or a local model folder")
    _positive(model_args, "lora_r", "lora_alpha")
    _positive(training_args, "learning_rate")
    _at_least(model_args, 0, "lora_dropout")
    _at_least(training_args, 1, "per_device_train_batch_size", "gradient_accumulation_steps")


@dataclass
class SessionArguments:
    """The sessions the policy is trained in."""

    therapist_prompt: str = field(default="brief", metadata={"help": "system prompt of the policy (name or .txt path)"})
    train_profiles: str = field(default="bank:train", metadata={"help": "profiles of the training sessions"})
    rounds: int = field(default=4, metadata={"help": "therapist turns per session"})

    def check_sessions(self) -> None:
        _at_least(self, 1, "rounds")
        _check_prompt(self.therapist_prompt)
        _check_profiles("train_profiles", self.train_profiles)


@dataclass
class EvalArguments:
    """The held-out episodes the base and the trained policy are compared on (greedy, same episodes)."""

    eval_profiles: str = field(default="bank:test", metadata={"help": "held-out profiles for before/after evaluation"})
    eval_attitudes: str = field(default="both", metadata={"help": "'both', 'active', 'passive' or 'profile'"})
    eval_limit: int = field(default=0, metadata={"help": "evaluate on the first N eval profiles only (0: all)"})
    eval_seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "seeds per eval profile x attitude"})
    crisis_per_type: int = field(default=4, metadata={"help": "crisis probes per crisis type the policy answers before and after training (0: no crisis block)"})
    guardrail: bool = field(default=True, metadata={"help": "evaluate the policy behind the crisis guardrail (cbtgym.therapists.guardrail: detected crises get a written safe reply) and report it alone in eval.unguarded; false: the policy alone"})
    heldout_patient: str = field(default="embedded", metadata={"help": "held-out panel's patient (one the training did not use): a backend spec for an LLM patient ('embedded': a SmolLM2 of its own), 'rule', or 'none' (no panel)"})
    heldout_reward: str = field(default="composite", metadata={"help": f"held-out panel's reward: 'rubric', 'placeholder' or {REWARD_FORMS}"})
    heldout_limit: int = field(default=4, metadata={"help": "held-out panel on the first N eval profiles only (0: all; the default, 8 sessions, keeps the LLM patient to minutes on a CPU)"})

    def check_eval(self) -> None:
        _one_of(self, "eval_attitudes", EVAL_ATTITUDES)
        _at_least(self, 0, "eval_limit", "heldout_limit", "crisis_per_type")
        if not self.eval_seeds:
            raise ConfigError("eval_seeds: empty; give at least one seed, e.g. --eval_seeds 0")
        _check_profiles("eval_profiles", self.eval_profiles)
        if self.heldout_patient != "none":
            _check_patient(self.heldout_patient, "heldout_patient")
            _check_reward(self.heldout_reward, "heldout_reward")


@dataclass
class DPOArguments(SessionArguments, EvalArguments):
    """train/dpo.py: preference pairs from env rollouts (TRL's DPOConfig and ModelConfig hold the rest)."""

    patient: str = field(default="rule", metadata={"help": "'rule' or a backend spec for the LLM patient (e.g. 'embedded': its own copy of SmolLM2)"})
    patient_max_new_tokens: int = field(default=32, metadata={"help": "tokens per LLM-patient turn"})
    patient_temperature: float = field(default=0.7, metadata={"help": "LLM-patient sampling temperature (0: greedy)"})
    patient_ratings: str = field(default="end", metadata={"help": "when the LLM patient rates its satisfaction: 'end', 'turn' or 'never'"})
    patient_disclosure: str = field(default="gated", metadata={"help": "what the LLM patient may tell: 'gated' (each profile layer arrives as the therapist's questions reach it; small models such as SmolLM2) or 'free' (the whole profile up front; capable models, the Llama 3.1 configs)"})
    reward: str = field(default="rubric", metadata={"help": f"reward function of the env: 'rubric', 'placeholder' or {REWARD_FORMS} (e.g. 'composite:llm@vllm:<dir>': LLM judges on that model)"})
    collect_episodes: int = field(default=24, metadata={"help": "training sessions to sample candidates in"})
    risk_episodes: int = field(default=0, metadata={"help": "extra training sessions on the profiles with risk flags (crisis states to learn from)"})
    crisis_k: int = field(default=0, metadata={"help": "candidates in the first state of a session that opens in a crisis (risk_opening; 0: k): a small policy's own safe reply to a crisis is rare"})
    risk_opening: bool = field(default=False, metadata={"help": "the risk_episodes open with the patient's risk statement, so every one of them holds crisis states (otherwise only a policy that reaches a disclosure meets them)"})
    k: int = field(default=4, metadata={"help": "candidates sampled per therapist turn"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature for candidates (> 0)"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens per therapist utterance"})
    scoring: str = field(default="patient", metadata={"help": "'turn' (judge the reply), 'patient' (judge after the patient answers) or 'episode' (the return of the session the policy plays on to its end, terminal judges included)"})
    scoring_rollouts: int = field(default=1, metadata={"help": "scoring 'episode': continuations per candidate (1: greedy; more: sampled at --temperature and averaged)"})
    min_margin: float = field(default=0.2, metadata={"help": "minimum score gap between chosen and rejected"})
    pairing: str = field(default="improve", metadata={"help": "'extremes' (best vs worst sample), 'greedy' (each vs the greedy reply) or 'improve' (only best vs greedy)"})
    explore_prefixes: list[str] = field(
        default_factory=list,
        metadata={"help": "hand-written openings guided candidates continue (imitation: off by default; see "
                          "configs/dpo/smollm2_cpu_guided.yaml): one candidate per item, a list item rotates (in YAML "
                          "a nested list; on the command line a JSON list item, e.g. '[\"A\", \"B\"]')"})
    advance: str = field(default="best", metadata={"help": "collection sessions go on with the 'greedy' reply (random sample without greedy pairing) or the 'best' candidate"})
    rollout_batch_size: int = field(default=16, metadata={"help": "sessions stepped together"})
    rollout_backend: str = field(default="hf", metadata={"help": "'hf' (the policy in process) or 'vllm' (GPU)"})
    prompt_messages: int = field(default=3, metadata={"help": "train on the system prompt + the last N dialogue messages (0: all)"})
    lora_layers: int = field(default=0, metadata={"help": "LoRA on the top N decoder layers only (0: all); backward stops there"})

    def __post_init__(self) -> None:
        # A list item given on the command line arrives as text: '["A", "B"]' is a rotating group.
        self.explore_prefixes = [json.loads(p) if isinstance(p, str) and p.lstrip().startswith("[") else p
                                 for p in self.explore_prefixes]

    def check(self, training_args: Any, model_args: Any) -> None:
        """Validate everything train/dpo.py relies on, before any model loads."""
        from trl import DPOConfig

        from ..patients.llm_patient import DISCLOSURE_MODES, RATING_SETTINGS
        from .preferences import PAIRINGS, SCORINGS, opening_groups

        _one_of(self, "scoring", SCORINGS)
        _at_least(self, 1, "scoring_rollouts")
        if self.scoring_rollouts > 1 and self.scoring != "episode":
            raise ConfigError(f"scoring_rollouts: {self.scoring_rollouts} continuations only count with --scoring episode "
                              f"(got scoring {self.scoring!r}); set --scoring episode or --scoring_rollouts 1")
        _one_of(self, "rollout_backend", ("hf", "vllm"))
        _one_of(self, "pairing", PAIRINGS)
        _one_of(self, "advance", ("greedy", "best"))
        _one_of(self, "patient_ratings", RATING_SETTINGS)
        _one_of(self, "patient_disclosure", DISCLOSURE_MODES)
        _at_least(self, 1, "collect_episodes", "max_new_tokens", "patient_max_new_tokens", "rollout_batch_size")
        _at_least(self, 0, "risk_episodes", "prompt_messages", "lora_layers", "min_margin", "patient_temperature")
        _at_least(self, 2, "k")
        if self.crisis_k:
            _at_least(self, 2, "crisis_k")
            if not (self.risk_opening and self.risk_episodes):
                raise ConfigError("crisis_k: applies to sessions that open in a crisis; set --risk_episodes N "
                                  "and --risk_opening true, or leave crisis_k unset")
        _positive(self, "temperature")
        try:
            groups = opening_groups(self.explore_prefixes)
        except ValueError as e:
            raise ConfigError(f"explore_prefixes: {e}") from None
        need = len(groups) + 1 + int(self.pairing != "extremes")
        if groups and self.k < need:
            raise ConfigError(f"k: {self.k} leaves no free sample beside {len(groups)} explore_prefixes"
                              f"{' and the greedy reply' if self.pairing != 'extremes' else ''}; use --k {need} or more, "
                              "or fewer explore_prefixes")
        accepted = _accepted(DPOConfig, "loss_type", r"Possible values are:(.*?)\. ")
        bad = [t for t in training_args.loss_type if t not in accepted]
        if bad:
            raise ConfigError(f"loss_type: {bad} not accepted by TRL's DPOTrainer; use some of {list(accepted)}")
        if training_args.beta < 0:
            raise ConfigError(f"beta: must be >= 0 (got {training_args.beta})")
        _at_least(training_args, 1, "max_length")
        _check_lora(training_args, model_args)
        _check_reward(self.reward)
        _check_patient(self.patient)
        self.check_sessions()
        self.check_eval()


@dataclass
class SFTArguments(SessionArguments, EvalArguments):
    """train/sft.py: the data and the evaluation (TRL's SFTConfig and ModelConfig hold the rest)."""

    data: str = field(default="best-of-k", metadata={"help": "'best-of-k' or a JSONL of episodes/conversations"})
    collect_episodes: int = field(default=32, metadata={"help": "best-of-k: sessions to sample in"})
    k: int = field(default=4, metadata={"help": "best-of-k: candidates per therapist turn"})
    min_score: float = field(default=0.5, metadata={"help": "best-of-k: keep a best candidate scoring at least this"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens per therapist utterance"})
    rollout_batch_size: int = field(default=16, metadata={"help": "sessions stepped together"})
    eval: bool = field(default=True, metadata={"help": "evaluate base and trained policy on held-out profiles"})

    def check(self, training_args: Any, model_args: Any) -> None:
        """Validate everything train/sft.py relies on, before any model loads."""
        _at_least(self, 1, "max_new_tokens", "rollout_batch_size")
        if self.data == "best-of-k":
            _at_least(self, 1, "collect_episodes")
            _at_least(self, 2, "k")
            self.check_sessions()
        elif not Path(self.data).is_file():
            raise ConfigError(f"data: {self.data} does not exist; give a JSONL of episodes or conversations, or 'best-of-k'")
        else:
            _at_least(self, 1, "rounds")
            _check_prompt(self.therapist_prompt)
        _at_least(training_args, 1, "max_length")
        _check_lora(training_args, model_args)
        if self.eval:
            self.check_eval()


@dataclass
class GRPOArguments(SessionArguments, EvalArguments):
    """train/grpo.py: the training sessions and the evaluation (TRL's GRPOConfig and ModelConfig hold the rest)."""

    patient: str = field(default="rule", metadata={"help": "'rule' or a backend spec for the LLM patient"})
    patient_disclosure: str = field(default="gated", metadata={"help": "what the LLM patient may tell: 'gated' (each profile layer arrives as the therapist's questions reach it; small models such as SmolLM2) or 'free' (the whole profile up front; capable models, the Llama 3.1 configs)"})
    reward: str = field(default="rubric", metadata={"help": f"env reward: 'rubric', 'placeholder' or {REWARD_FORMS}"})
    sessions: int = field(default=12, metadata={"help": "training session starts (seeds); each is played num_generations times, one GRPO group"})
    rollout_batch_size: int = field(default=16, metadata={"help": "evaluation: sessions stepped together"})
    eval: bool = field(default=True, metadata={"help": "evaluate base and trained policy on held-out profiles (replies of max_completion_length tokens)"})

    def check(self, training_args: Any, model_args: Any) -> None:
        """Validate everything train/grpo.py relies on, before any model loads."""
        from trl import GRPOConfig

        from ..patients.llm_patient import DISCLOSURE_MODES

        _one_of(self, "patient_disclosure", DISCLOSURE_MODES)
        _at_least(self, 1, "sessions")
        _at_least(training_args, 2, "num_generations")
        groups = training_args.generation_batch_size // training_args.num_generations
        if self.sessions < groups:
            raise ConfigError(f"sessions: {self.sessions} session starts cannot fill one generation batch of {groups} "
                              f"groups (generation_batch_size {training_args.generation_batch_size} / num_generations "
                              f"{training_args.num_generations}); set --sessions {groups} or more")
        _at_least(training_args, 1, "max_completion_length")
        _positive(training_args, "temperature")
        if training_args.generation_batch_size % training_args.num_generations:
            raise ConfigError(f"generation_batch_size: {training_args.generation_batch_size} (per_device_train_batch_size "
                              f"x gradient_accumulation_steps) is no multiple of num_generations="
                              f"{training_args.num_generations}; make it one")
        accepted = _accepted(GRPOConfig, "loss_type", r"Supported values are (.*?)\. ")
        if accepted and training_args.loss_type not in accepted:
            raise ConfigError(f"loss_type: {training_args.loss_type!r} not accepted by TRL's GRPOTrainer; use one of "
                              f"{list(accepted)}")
        if training_args.beta < 0:
            raise ConfigError(f"beta: must be >= 0 (got {training_args.beta})")
        _check_lora(training_args, model_args)
        _check_reward(self.reward)
        _check_patient(self.patient)
        self.check_sessions()
        if self.eval:
            _at_least(self, 1, "rollout_batch_size")
            self.check_eval()
