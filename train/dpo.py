"""DPO from environment rollouts: collect preference pairs with the simulated patient and the judge,
train a LoRA therapist with TRL's DPOTrainer, and evaluate base vs trained on held-out profiles.

    python train/dpo.py                                   # embedded CPU default (SmolLM2-135M, < 20 min, 2 cores)
    python train/dpo.py --config configs/dpo/llama31_8b_qlora.yaml   # GPU
    python train/dpo.py --output_dir outputs/x --k 6      # CLI flags override the YAML

Writes <output_dir>/results.json with eval.before/after/delta (paired bootstrap CI over episodes)
and the training summary; every stage resumes from its files when the run is restarted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from cbtgym.patients.llm_patient import RATING_SETTINGS
from cbtgym.training.config import config_to_dict, parse_config
from cbtgym.training.preferences import PAIRINGS, opening_groups


# Three of four openings aim at the automatic thought (two with a validation first, which a passive patient
# needs before it opens up): SmolLM2's free samples never ask about thoughts, and an opening met once in four
# states taught generic questions ("What brings you here today?") that never reach the thought layer.
QUESTION_OPENINGS = ("That sounds really hard. What went through your mind when", "What went through your mind when",
                     "It makes sense that you feel this way. What do you think", "Can you tell me more about")
SAFETY_OPENING = "I am worried about your safety. If you are in danger, call"


@dataclass
class DPOScriptConfig:
    """Everything train/dpo.py needs; each field is also a --flag."""

    output_dir: str = field(default="outputs/dpo-smollm2", metadata={"help": "where pairs, adapter, evals and results.json go"})
    model: str = field(default="embedded", metadata={"help": "'embedded' (SmolLM2-135M-Instruct) or a model path"})
    therapist_prompt: str = field(default="brief", metadata={"help": "system prompt of the policy (name or .txt path)"})
    train_profiles: str = field(default="bank:train", metadata={"help": "profiles for pair collection"})
    eval_profiles: str = field(default="bank:test", metadata={"help": "held-out profiles for before/after evaluation"})
    eval_attitudes: str = field(default="both", metadata={"help": "'both', 'active', 'passive' or 'profile'"})
    eval_limit: int = field(default=0, metadata={"help": "evaluate on the first N eval profiles only (0: all)"})
    eval_seeds: list = field(default_factory=lambda: [0], metadata={"help": "seeds per eval profile x attitude"})
    patient: str = field(default="rule", metadata={"help": "'rule' or a backend spec for the LLM patient (e.g. 'embedded': its own copy of SmolLM2)"})
    patient_max_new_tokens: int = field(default=32, metadata={"help": "tokens per LLM-patient turn"})
    patient_temperature: float = field(default=0.7, metadata={"help": "LLM-patient sampling temperature"})
    patient_ratings: str = field(default="end", metadata={"help": "when the LLM patient rates its satisfaction: 'end', 'turn' or 'never'"})
    reward: str = field(default="rubric", metadata={"help": "reward function of the env: 'rubric'"})
    rounds: int = field(default=4, metadata={"help": "therapist turns per session"})
    collect_episodes: int = field(default=24, metadata={"help": "training sessions to sample candidates in"})
    risk_episodes: int = field(default=0, metadata={"help": "extra training sessions on the profiles with risk flags (crisis states to learn from)"})
    k: int = field(default=4, metadata={"help": "candidates sampled per therapist turn"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature for candidates"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens per therapist utterance"})
    scoring: str = field(default="patient", metadata={"help": "'turn' (judge the reply) or 'patient' (judge after the patient answers)"})
    min_margin: float = field(default=0.2, metadata={"help": "minimum score gap between chosen and rejected"})
    pairing: str = field(default="improve", metadata={"help": "'extremes' (best vs worst sample), 'greedy' (each vs the greedy reply) or 'improve' (only best vs greedy)"})
    explore_prefixes: list = field(default_factory=lambda: [list(QUESTION_OPENINGS), SAFETY_OPENING], metadata={"help": "openings guided candidates continue: one candidate per item, a list item rotates (see collect_candidates)"})
    advance: str = field(default="best", metadata={"help": "collection sessions go on with the 'greedy' reply (random sample without greedy pairing) or the 'best' candidate"})
    rollout_batch_size: int = field(default=16, metadata={"help": "sessions stepped together"})
    rollout_backend: str = field(default="hf", metadata={"help": "'hf' (the policy in process) or 'vllm' (GPU)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "DPO learning rate (LoRA)"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta"})
    loss_type: list = field(default_factory=lambda: ["sigmoid", "sft"], metadata={"help": "TRL DPO loss types, e.g. [sigmoid, sft] (RPO)"})
    loss_weights: list = field(default_factory=list, metadata={"help": "weights of loss_type (empty: all 1.0)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over the pairs"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "pairs per device step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps per optimizer update"})
    max_length: int = field(default=640, metadata={"help": "max tokens of prompt + reply"})
    prompt_messages: int = field(default=3, metadata={"help": "train on the system prompt + the last N dialogue messages (0: all)"})
    precompute_ref_log_probs: bool = field(default=True, metadata={"help": "reference log-probs once before training"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_layers: int = field(default=0, metadata={"help": "LoRA on the top N decoder layers only (0: all); backward stops there"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit base model (GPU, bitsandbytes)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    bf16: bool = field(default=False, metadata={"help": "bf16 training (GPU)"})
    save_steps: int = field(default=25, metadata={"help": "checkpoint every N optimizer steps (resume point)"})
    seed: int = field(default=0, metadata={"help": "seed of everything"})
    wandb: bool = field(default=True, metadata={"help": "log to W&B (offline unless WANDB_MODE is set)"})

    def __post_init__(self) -> None:
        if self.scoring not in ("turn", "patient"):
            raise ValueError(f"scoring must be 'turn' or 'patient' (got {self.scoring!r})")
        if self.rollout_backend not in ("hf", "vllm"):
            raise ValueError(f"rollout_backend must be 'hf' or 'vllm' (got {self.rollout_backend!r})")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS} (got {self.pairing!r})")
        if self.k < 2:
            raise ValueError(f"k must be >= 2 (got {self.k})")
        if self.patient_ratings not in RATING_SETTINGS:
            raise ValueError(f"patient_ratings must be one of {RATING_SETTINGS} (got {self.patient_ratings!r})")
        if self.advance not in ("greedy", "best"):
            raise ValueError(f"advance must be 'greedy' or 'best' (got {self.advance!r})")
        opening_groups(self.explore_prefixes)  # raises on an empty opening, naming the field


def main(cfg: DPOScriptConfig) -> dict:
    import torch
    from datasets import Dataset
    from tqdm import tqdm
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from cbtgym.backends import HFBackend, Sampling, make_backend
    from cbtgym.backends.hf import DEFAULT_PREFIX_CACHE_GB
    from cbtgym.jsonl import read_jsonl
    from cbtgym.patients import LLMPatient
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.evaluation import compare, eval_specs, evaluate_backend
    from cbtgym.training.policy import load_policy, resolve_model_path
    from cbtgym.training.policy import lora_config
    from cbtgym.training.preferences import (CandidateScoring, collect_candidates, collection_specs,
                                             pairs_from_candidates, trim_prompt)
    from cbtgym.training.tracking import init_wandb, log_transcripts

    t0 = time.time()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = init_wandb(cfg, "dpo", cfg.model, cfg.seed, str(out), enabled=cfg.wandb)
    timings: dict[str, float] = {}

    env_kwargs = dict(profiles=cfg.train_profiles, max_rounds=cfg.rounds, reward_fn=cfg.reward)
    if cfg.patient != "rule":
        # A model of its own: the policy's weights change in training, the patient's must not.
        patient_backend = make_backend(cfg.patient)
        if isinstance(patient_backend, HFBackend):  # the patient answers all k candidates of a chunk in one call
            patient_backend.batch_size = max(patient_backend.batch_size, cfg.rollout_batch_size * cfg.k)
        env_kwargs["patient"] = LLMPatient.configured(
            patient_backend, cfg.patient_max_new_tokens, cfg.patient_temperature, cfg.patient_ratings, cfg.seed)
    eval_kwargs = {**env_kwargs, "profiles": cfg.eval_profiles}
    model, tokenizer = load_policy(cfg.model, load_in_4bit=cfg.load_in_4bit)

    vllm_policy = None

    def policy_backend(m, adapter: str | None = None):
        """The policy for rollouts: the in-process model (hf), or one vLLM engine that swaps in the adapter."""
        nonlocal vllm_policy
        if cfg.rollout_backend == "hf":
            # Each backend serves one phase (eval, collection, eval) whose weights stay fixed: states can be reused.
            return HFBackend(m, tokenizer, batch_size=cfg.rollout_batch_size, prefix_cache_gb=DEFAULT_PREFIX_CACHE_GB)
        if vllm_policy is None:
            vllm_policy = make_backend({"type": "vllm", "model": resolve_model_path(cfg.model), "enable_lora": True,
                                        "max_lora_rank": cfg.lora_r})
        vllm_policy.set_adapter(adapter)
        return vllm_policy

    # 1. the base policy on held-out profiles
    specs = eval_specs(cfg.eval_profiles, cfg.eval_attitudes, cfg.eval_seeds, cfg.eval_limit)
    base = policy_backend(model)
    t = time.time()
    before = evaluate_backend(base, cfg.therapist_prompt, specs, out / "eval_before.jsonl", desc="eval before",
                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.rollout_batch_size, **eval_kwargs)
    timings["eval_before_s"] = time.time() - t

    # 2. preference pairs from rollouts on training profiles
    collect = collection_specs(cfg.train_profiles, cfg.collect_episodes, cfg.risk_episodes, cfg.seed)
    with tqdm(total=len(collect), desc="collect pairs", unit="ep") as bar:
        t = time.time()
        cand_path = collect_candidates(
            base, therapist_prompt(cfg.therapist_prompt), collect, out, k=cfg.k,
            sampling=Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=0.95),
            scoring=CandidateScoring(cfg.scoring), batch_size=cfg.rollout_batch_size, greedy_anchor=cfg.pairing != "extremes",
            explore_prefixes=cfg.explore_prefixes, advance_best=cfg.advance == "best",
            progress=bar.update, **env_kwargs)
        timings["collect_s"] = time.time() - t
    pairs = pairs_from_candidates(cand_path, cfg.min_margin, cfg.pairing)
    if not pairs:
        raise SystemExit(f"no pair reached min_margin={cfg.min_margin}: sample more candidates (--k) or episodes")
    with open(out / "pairs.jsonl", "w") as fh:
        fh.writelines(json.dumps(p) + "\n" for p in pairs)
    dataset = Dataset.from_list([{"prompt": trim_prompt(p["prompt"], cfg.prompt_messages), "chosen": p["chosen"],
                                  "rejected": p["rejected"]} for p in pairs])
    dataset.save_to_disk(str(out / "pairs_dataset"))

    # 3. DPO with LoRA, checkpointed; a restarted run resumes from the last checkpoint
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), learning_rate=cfg.learning_rate, beta=cfg.beta,
        loss_type=list(cfg.loss_type), loss_weights=list(cfg.loss_weights) or None,
        num_train_epochs=cfg.num_train_epochs, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs, logging_steps=5, save_steps=cfg.save_steps, save_total_limit=2,
        report_to=["wandb"] if run is not None else [], run_name=run.name if run is not None else None,
        seed=cfg.seed, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        lr_scheduler_type="constant_with_warmup", warmup_steps=2, dataset_num_proc=None,
    )
    peft_config = lora_config(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_layers)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    before_params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    last_ckpt = _last_checkpoint(out / "checkpoints")
    t = time.time()
    train_result = trainer.train(resume_from_checkpoint=last_ckpt)
    timings["train_s"] = time.time() - t
    changed = sum(not torch.equal(before_params[n], p.detach()) for n, p in trainer.model.named_parameters() if n in before_params)
    trainer.model.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))

    # 4. the trained policy on the same held-out episodes (LoRA merged: rollouts at the base model's speed)
    t = time.time()
    trained = trainer.model.merge_and_unload().eval() if cfg.rollout_backend == "hf" else None
    after = evaluate_backend(policy_backend(trained, str(out / "adapter")), cfg.therapist_prompt, specs, out / "eval_after.jsonl",
                             desc="eval after", max_new_tokens=cfg.max_new_tokens, batch_size=cfg.rollout_batch_size,
                             **eval_kwargs)
    timings["eval_after_s"] = time.time() - t

    logs = [h for h in trainer.state.log_history if "loss" in h]
    margins = [p["margin"] for p in pairs]
    results = {
        "eval": compare(before, after),
        "train": {
            "pairs": len(pairs),
            "candidate_states": sum(len(r["states"]) for r in read_jsonl(cand_path)),
            "pair_margin_mean": sum(margins) / len(margins),
            "steps": trainer.state.global_step,
            "loss_first": logs[0]["loss"] if logs else None,
            "loss_last": logs[-1]["loss"] if logs else None,
            "train_loss": train_result.training_loss,
            "reward_accuracy_last": logs[-1].get("rewards/accuracies") if logs else None,
            "trainable_tensors_changed": int(changed),
            "trainable_tensors": len(before_params),
        },
        "timings_s": {**timings, "total": time.time() - t0},
        "adapter": str(out / "adapter"),
        "config": config_to_dict(cfg),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if run is not None:
        run.log({"eval/before_mean_reward": results["eval"]["before"]["mean_reward"],
                 "eval/after_mean_reward": results["eval"]["after"]["mean_reward"],
                 "eval/delta": results["eval"]["delta"]["mean"], "pairs/count": len(pairs),
                 "pairs/margin_mean": results["train"]["pair_margin_mean"]})
        log_transcripts(run, "eval/after_transcripts", after)
        log_transcripts(run, "eval/before_transcripts", before)
        run.finish()
    d = results["eval"]["delta"]
    print(f"\nmean episode reward {results['eval']['before']['mean_reward']:.3f} -> {results['eval']['after']['mean_reward']:.3f}; "
          f"delta {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}) over {results['eval']['episodes']} "
          f"episodes; {len(pairs)} pairs; {results['timings_s']['total'] / 60:.1f} min\nresults: {out / 'results.json'}")
    return results


def _last_checkpoint(path: Path) -> str | None:
    ckpts = sorted(path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if path.exists() else []
    return str(ckpts[-1]) if ckpts else None


if __name__ == "__main__":
    main(parse_config(DPOScriptConfig, description=__doc__.splitlines()[0]))
