"""Online RL (GRPO) in CBTSession-v0: multi-turn rollouts with the current policy during training.

    python train/grpo.py                                    # embedded CPU default: a short SmolLM2 + LoRA job
    python train/grpo.py --config configs/grpo/llama31_8b_lora.yaml

Each training row names a session and a therapist turn; TRL's GRPOTrainer calls a rollout
function that plays the session with the current policy up to that turn and samples a group
of completions at that patient state (patient turns are prompt, so they are masked out of the
loss). The reward: the simulated patient answers each completion and the env's reward function
(the embedded rubric by default) scores it. Writes <output_dir>/results.json and the adapter.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbtgym.training.config import config_to_dict, parse_config


@dataclass
class GRPOScriptConfig:
    """Everything train/grpo.py needs; each field is also a --flag."""

    output_dir: str = field(default="outputs/grpo-smollm2", metadata={"help": "where the adapter and results.json go"})
    model: str = field(default="embedded", metadata={"help": "'embedded' (SmolLM2-135M-Instruct) or a model path"})
    therapist_prompt: str = field(default="brief", metadata={"help": "system prompt of the policy"})
    train_profiles: str = field(default="bank:train", metadata={"help": "profiles of the training sessions"})
    patient: str = field(default="rule", metadata={"help": "'rule' or a backend spec for the LLM patient"})
    reward: str = field(default="rubric", metadata={"help": "env reward: 'rubric'"})
    sessions: int = field(default=16, metadata={"help": "distinct training sessions (seeds)"})
    rounds: int = field(default=4, metadata={"help": "therapist turns per session"})
    num_generations: int = field(default=4, metadata={"help": "completions per patient state (the group)"})
    max_completion_length: int = field(default=32, metadata={"help": "tokens per therapist utterance"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the group"})
    learning_rate: float = field(default=1e-4, metadata={"help": "learning rate (LoRA)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient"})
    max_steps: int = field(default=8, metadata={"help": "optimizer steps"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "completions per device step (multiple of num_generations)"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "steps per optimizer update"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA base (GPU)"})
    bf16: bool = field(default=False, metadata={"help": "bf16 training (GPU)"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps (resume point)"})
    seed: int = field(default=0, metadata={"help": "seed of everything"})
    wandb: bool = field(default=True, metadata={"help": "log to W&B (offline unless WANDB_MODE is set)"})

    def __post_init__(self) -> None:
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError("per_device_train_batch_size must be a multiple of num_generations "
                             f"(got {self.per_device_train_batch_size} and {self.num_generations})")


def main(cfg: GRPOScriptConfig) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from cbtgym.backends import Sampling, make_backend
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.online import EnvReward, EnvRollout, session_rows
    from cbtgym.training.policy import load_policy
    from cbtgym.training.tracking import init_wandb

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t0 = time.time()
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = init_wandb(cfg, "grpo", cfg.model, cfg.seed, str(out), enabled=cfg.wandb)
    model, tokenizer = load_policy(cfg.model, load_in_4bit=cfg.load_in_4bit)
    env_kwargs = dict(profiles=cfg.train_profiles, max_rounds=cfg.rounds, reward_fn=cfg.reward)
    if cfg.patient != "rule":
        env_kwargs.update(patient="llm", patient_backend=make_backend(cfg.patient))
    rollout = EnvRollout(therapist_prompt(cfg.therapist_prompt), env_kwargs,
                         Sampling(max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature, top_p=1.0))
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"), learning_rate=cfg.learning_rate, beta=cfg.beta, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size, num_generations=cfg.num_generations,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2,
        report_to=["wandb"] if run is not None else [], run_name=run.name if run is not None else None,
        seed=cfg.seed, bf16=cfg.bf16, log_completions=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[EnvReward(env_kwargs)], args=args,
        train_dataset=Dataset.from_list(session_rows(cfg.sessions, cfg.rounds, cfg.seed)), processing_class=tokenizer,
        peft_config=LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
        rollout_func=rollout,
    )
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    result = trainer.train(resume_from_checkpoint=str(ckpts[-1]) if ckpts else None)
    changed = sum(not torch.equal(start[n], p.detach()) for n, p in trainer.model.named_parameters() if n in start)
    trainer.model.save_pretrained(str(out / "adapter"))
    tokenizer.save_pretrained(str(out / "adapter"))
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    results = {
        "train": {"steps": trainer.state.global_step, "train_loss": result.training_loss,
                  "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
                  "rewards": rewards, "trainable_tensors_changed": int(changed), "trainable_tensors": len(start),
                  "rollout_calls": rollout.calls},
        "adapter": str(out / "adapter"), "timings_s": {"total": time.time() - t0}, "config": config_to_dict(cfg),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if run is not None:
        run.finish()
    print(json.dumps(results["train"], indent=2))
    return results


if __name__ == "__main__":
    main(parse_config(GRPOScriptConfig, description=__doc__.splitlines()[0]))
