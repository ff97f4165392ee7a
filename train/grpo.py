"""Online RL (GRPO) in CBTSession-v0: whole sessions played by the current policy during training.

    python train/grpo.py                                    # embedded CPU default: a short SmolLM2 + LoRA job
    python train/grpo.py --config configs/grpo/llama31_8b_lora.yaml
    python train/grpo.py --help                             # every GRPOConfig / ModelConfig field, and cbtgym's

Multi-turn GRPO (cbtgym.training.online): each training row is a session start (seed, drawn profile); a
group is the num_generations sessions TRL makes of a row, forked from one start. The policy writes every
therapist turn (TRL's generation: transformers here, vLLM with --use_vllm; GRPOConfig's temperature/top_p,
max_completion_length tokens per turn), the patient answers all sessions in one call per round. A session is
one completion: the therapist's tokens train (env_mask 1), the patient's tokens between them are masked out
(env_mask 0). The reward is the session's return under the env's reward (--reward, the embedded rubric by
default; the last step is scored with done=True); a session whose judge failed has no reward, leaves its
group's statistics with advantage 0 and is counted (results.json train.judge_failures, W&B
train/judge_failures). Arguments: cbtgym's GRPOArguments beside TRL's GRPOConfig and ModelConfig (defaults:
GRPO_DEFAULTS). Writes <output_dir>/results.json and the adapter; with --eval (the default) results.json holds
the before/after evaluation of cbtgym.training.heldout (the env reward on held-out profiles, the held-out
panel, diversity, safety; replies of max_completion_length tokens).
"""

from __future__ import annotations

import json
import os
import time

from trl import GRPOConfig, ModelConfig

from cbtgym.training.arguments import GRPO_DEFAULTS, GRPOArguments
from cbtgym.training.config import config_to_dict, parse_or_exit


def main(args: GRPOArguments, training_args: GRPOConfig, model_args: ModelConfig) -> dict:
    from datasets import Dataset
    from trl import GRPOTrainer

    from cbtgym.backends import HFBackend, make_backend
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.heldout import EvalPanel
    from cbtgym.training.online import EpisodeReturn, SessionRollout, session_rows
    from cbtgym.training.preferences import collection_specs
    from cbtgym.training.ranks import Shard
    from cbtgym.training.policy import load_policy, lora_from_model_config
    from cbtgym.training.runs import peak_rss_gb, start_run, train_adapter, write_results
    from cbtgym.training.tracking import log_eval

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t0 = time.time()
    shard = Shard.current()  # under a launcher: TRL splits the training groups, the eval panel splits its stages
    config = config_to_dict(args, training_args, model_args)
    out, run = start_run("grpo", args, training_args, model_args)
    model, tokenizer = load_policy(model_args.model_name_or_path, load_in_4bit=model_args.load_in_4bit,
                                   dtype=model_args.dtype)
    env_kwargs = dict(profiles=args.train_profiles, max_rounds=args.rounds, reward_fn=args.reward)
    if args.patient != "rule":
        env_kwargs.update(patient="llm", patient_backend=make_backend(args.patient), patient_disclosure=args.patient_disclosure)
    panel = EvalPanel(args, out, env_kwargs={**env_kwargs, "profiles": args.eval_profiles}, rounds=args.rounds,
                      max_new_tokens=training_args.max_completion_length, batch_size=args.rollout_batch_size,
                      seed=training_args.seed, shard=shard) if args.eval else None
    if panel is not None:  # the base policy, greedy, before the trainer wraps it
        panel.run("before", HFBackend(model, tokenizer, batch_size=args.rollout_batch_size))
    rollout = SessionRollout(therapist_prompt(args.therapist_prompt), env_kwargs)
    reward = EpisodeReturn(training_args.num_generations)
    specs = collection_specs(args.train_profiles, args.sessions, seed=training_args.seed)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=training_args, train_dataset=Dataset.from_list(session_rows(specs)),
        processing_class=tokenizer, peft_config=lora_from_model_config(model, model_args), rollout_func=rollout,
    )
    trained = train_adapter(trainer, tokenizer, out)
    logged = {key: [h[key] for h in trainer.state.log_history if key in h]
              for key in ("reward", "reward_std", "group_reward_std", "kl", "completions/mean_length")}
    rewards = logged["reward"]
    results = {
        "train": {**trained.summary(trainer), "reward_first": rewards[0] if rewards else None,
                  "reward_last": rewards[-1] if rewards else None, "rewards": rewards,
                  "group_reward_std": logged["group_reward_std"], "reward_std": logged["reward_std"],
                  **({"kl": logged["kl"]} if training_args.beta > 0 else {}),
                  "therapist_tokens_per_session": logged["completions/mean_length"],
                  # each process played and scored its own share of the groups
                  "judge_failures": {k: int(shard.total(v)) for k, v in reward.counts().items()},
                  "rollout_calls": rollout.calls, "sessions_played": int(shard.total(rollout.sessions))},
        "adapter": str(out / "adapter"), "config": config,
    }
    if panel is not None:
        panel.run("after", HFBackend(trainer.model.eval(), tokenizer, batch_size=args.rollout_batch_size))
        results["eval"] = panel.results()
    results["timings_s"] = {**(panel.timings if panel else {}), "train": trained.seconds, "total": time.time() - t0}
    results["peak_rss_gb"] = peak_rss_gb()
    write_results(out, results)
    if run is not None:
        if panel is not None:
            log_eval(run, results["eval"], panel.episodes)
        run.log({"grpo/judge_failures": results["train"]["judge_failures"]["samples"],
                 "grpo/judge_failure_groups": results["train"]["judge_failures"]["groups"]})
        run.finish()
    if not shard.is_main:
        return results
    print(json.dumps(results["train"], indent=2))
    if panel is not None:
        print("\n".join(EvalPanel.lines(results["eval"])))
    return results


if __name__ == "__main__":
    main(*parse_or_exit((GRPOArguments, GRPOConfig, ModelConfig), GRPO_DEFAULTS))
