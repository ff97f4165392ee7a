"""Supervised fine-tuning of a therapist on transcripts, with TRL's SFTTrainer and LoRA.

    python train/sft.py                                        # embedded CPU default (best-of-k self-distillation)
    python train/sft.py --data outputs/teacher.jsonl           # transcripts from a strong teacher (see README)
    python train/sft.py --config configs/sft/llama31_8b_lora.yaml

Data: a JSONL of episodes written by `cbtgym simulate` (e.g. with a strong teacher model as therapist,
as Tahir generated 20-session courses) or of conversations ({"messages": [...]}, therapist = assistant).
With `--data best-of-k` (the default) the teacher is the policy itself plus the judge: k candidates are
sampled at each therapist turn of sessions with the simulated patient, and the best one (if it scores at
least --min_score) becomes the target. Only therapist turns are learned; patient turns are prompt.
Writes <output_dir>/results.json (training summary and, with --eval, before/after evaluation).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbtgym.training.config import config_to_dict, parse_config


@dataclass
class SFTScriptConfig:
    """Everything train/sft.py needs; each field is also a --flag."""

    output_dir: str = field(default="outputs/sft-smollm2", metadata={"help": "where data, adapter and results.json go"})
    model: str = field(default="embedded", metadata={"help": "'embedded' (SmolLM2-135M-Instruct) or a model path"})
    therapist_prompt: str = field(default="brief", metadata={"help": "system prompt put before every example"})
    data: str = field(default="best-of-k", metadata={"help": "'best-of-k' or a JSONL of episodes/conversations"})
    train_profiles: str = field(default="bank:train", metadata={"help": "profiles for best-of-k data"})
    collect_episodes: int = field(default=32, metadata={"help": "best-of-k: sessions to sample in"})
    k: int = field(default=4, metadata={"help": "best-of-k: candidates per therapist turn"})
    min_score: float = field(default=0.5, metadata={"help": "best-of-k: keep a best candidate scoring at least this"})
    rounds: int = field(default=4, metadata={"help": "therapist turns per session"})
    max_new_tokens: int = field(default=32, metadata={"help": "tokens per therapist utterance"})
    rollout_batch_size: int = field(default=16, metadata={"help": "sessions stepped together"})
    learning_rate: float = field(default=2e-4, metadata={"help": "learning rate (LoRA)"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "epochs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after N steps (-1: epochs decide)"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "examples per device step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps per optimizer update"})
    max_length: int = field(default=640, metadata={"help": "max tokens per example"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA base (GPU)"})
    bf16: bool = field(default=False, metadata={"help": "bf16 training (GPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    save_steps: int = field(default=25, metadata={"help": "checkpoint every N steps (resume point)"})
    eval: bool = field(default=True, metadata={"help": "evaluate base and trained policy on held-out profiles"})
    eval_profiles: str = field(default="bank:test", metadata={"help": "held-out profiles"})
    eval_attitudes: str = field(default="both", metadata={"help": "'both', 'active', 'passive' or 'profile'"})
    eval_limit: int = field(default=0, metadata={"help": "evaluate on the first N eval profiles only (0: all)"})
    seed: int = field(default=0, metadata={"help": "seed of everything"})
    wandb: bool = field(default=True, metadata={"help": "log to W&B (offline unless WANDB_MODE is set)"})


def main(cfg: SFTScriptConfig) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from tqdm import tqdm
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from cbtgym.backends import HFBackend, Sampling
    from cbtgym.rollout import EpisodeSpec
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.evaluation import compare, eval_specs, evaluate_backend
    from cbtgym.training.policy import load_policy
    from cbtgym.training.preferences import collect_candidates
    from cbtgym.training.sft_data import best_of_k_examples, dedupe, load_sft_examples
    from cbtgym.training.tracking import init_wandb

    t0 = time.time()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = init_wandb(cfg, "sft", cfg.model, cfg.seed, str(out), enabled=cfg.wandb)
    model, tokenizer = load_policy(cfg.model, load_in_4bit=cfg.load_in_4bit)
    system = therapist_prompt(cfg.therapist_prompt)
    env_kwargs = dict(max_rounds=cfg.rounds, reward_fn="rubric")
    specs = eval_specs(cfg.eval_profiles, cfg.eval_attitudes, limit=cfg.eval_limit) if cfg.eval else []
    before = evaluate_backend(HFBackend(model, tokenizer), cfg.therapist_prompt, specs, out / "eval_before.jsonl",
                              desc="eval before", max_new_tokens=cfg.max_new_tokens, batch_size=cfg.rollout_batch_size,
                              profiles=cfg.eval_profiles, **env_kwargs) if cfg.eval else []

    if cfg.data == "best-of-k":
        collect = [EpisodeSpec(seed=cfg.seed * 100000 + i) for i in range(cfg.collect_episodes)]
        with tqdm(total=len(collect), desc="best-of-k data", unit="ep") as bar:
            path = collect_candidates(
                HFBackend(model, tokenizer, batch_size=cfg.rollout_batch_size), system, collect, out, k=cfg.k,
                sampling=Sampling(max_new_tokens=cfg.max_new_tokens, temperature=1.0, top_p=0.95),
                batch_size=cfg.rollout_batch_size, progress=bar.update, profiles=cfg.train_profiles, **env_kwargs)
        examples = best_of_k_examples(path, cfg.min_score)
    else:
        examples = load_sft_examples(cfg.data, system)
    examples = dedupe(examples)
    if not examples:
        raise SystemExit(f"no training examples (best-of-k kept none at --min_score {cfg.min_score})")
    with open(out / "sft_examples.jsonl", "w") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in examples)

    args = SFTConfig(
        output_dir=str(out / "checkpoints"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        completion_only_loss=True, logging_steps=5, save_steps=cfg.save_steps, save_total_limit=2,
        report_to=["wandb"] if run is not None else [], run_name=run.name if run is not None else None,
        seed=cfg.seed, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
    )
    peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                         peft_config=peft_config)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    result = trainer.train(resume_from_checkpoint=str(ckpts[-1]) if ckpts else None)
    changed = sum(not torch.equal(start[n], p.detach()) for n, p in trainer.model.named_parameters() if n in start)
    trainer.model.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))

    results: dict = {"train": {"examples": len(examples), "steps": trainer.state.global_step,
                               "train_loss": result.training_loss, "trainable_tensors_changed": int(changed),
                               "trainable_tensors": len(start)},
                     "adapter": str(out / "adapter"), "config": config_to_dict(cfg)}
    if cfg.eval:
        after = evaluate_backend(HFBackend(trainer.model.eval(), tokenizer), cfg.therapist_prompt, specs,
                                 out / "eval_after.jsonl", desc="eval after", max_new_tokens=cfg.max_new_tokens,
                                 batch_size=cfg.rollout_batch_size, profiles=cfg.eval_profiles, **env_kwargs)
        results["eval"] = compare(before, after)
    results["timings_s"] = {"total": time.time() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if run is not None:
        run.finish()
    print(json.dumps({k: results[k] for k in ("train",) + (("eval",) if cfg.eval else ())}, indent=2))
    return results


if __name__ == "__main__":
    main(parse_config(SFTScriptConfig, description=__doc__.splitlines()[0]))
