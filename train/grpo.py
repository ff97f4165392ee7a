"""Online RL (GRPO) in CBTSession-v0: multi-turn rollouts with the current policy during training.

    python train/grpo.py                                    # embedded CPU default: a short SmolLM2 + LoRA job
    python train/grpo.py --config configs/grpo/llama31_8b_lora.yaml
    python train/grpo.py --help                             # every GRPOConfig / ModelConfig field, and cbtgym's

Each training row names a session and a therapist turn; TRL's GRPOTrainer calls a rollout
function that plays the session with the current policy up to that turn and samples a group
of completions at that patient state (patient turns are prompt, so they are masked out of the
loss). The reward: the simulated patient answers each completion and the env's reward function
(the embedded rubric by default) scores it. Arguments: cbtgym's GRPOArguments beside TRL's
GRPOConfig and ModelConfig (defaults: GRPO_DEFAULTS). Writes <output_dir>/results.json and the adapter; with
--eval (the default) results.json holds the before/after evaluation of cbtgym.training.heldout (the env reward on
held-out profiles, the held-out panel, diversity, safety; replies of max_completion_length tokens).
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

    from cbtgym.backends import HFBackend, Sampling, make_backend
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.heldout import EvalPanel
    from cbtgym.training.online import EnvReward, EnvRollout, session_rows
    from cbtgym.training.policy import load_policy, lora_from_model_config
    from cbtgym.training.runs import start_run, train_adapter, write_results

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t0 = time.time()
    config = config_to_dict(args, training_args, model_args)
    out, run = start_run("grpo", args, training_args, model_args)
    model, tokenizer = load_policy(model_args.model_name_or_path, load_in_4bit=model_args.load_in_4bit,
                                   dtype=model_args.dtype)
    env_kwargs = dict(profiles=args.train_profiles, max_rounds=args.rounds, reward_fn=args.reward)
    if args.patient != "rule":
        env_kwargs.update(patient="llm", patient_backend=make_backend(args.patient))
    panel = EvalPanel(args, out, env_kwargs={**env_kwargs, "profiles": args.eval_profiles}, rounds=args.rounds,
                      max_new_tokens=training_args.max_completion_length, batch_size=args.rollout_batch_size,
                      seed=training_args.seed) if args.eval else None
    if panel is not None:  # the base policy, greedy, before the trainer wraps it
        panel.run("before", HFBackend(model, tokenizer, batch_size=args.rollout_batch_size))
    rollout = EnvRollout(therapist_prompt(args.therapist_prompt), env_kwargs,
                         Sampling(max_new_tokens=training_args.max_completion_length,
                                  temperature=training_args.temperature, top_p=training_args.top_p))
    trainer = GRPOTrainer(
        model=model, reward_funcs=[EnvReward(env_kwargs)], args=training_args,
        train_dataset=Dataset.from_list(session_rows(args.sessions, args.rounds, training_args.seed)),
        processing_class=tokenizer, peft_config=lora_from_model_config(model, model_args), rollout_func=rollout,
    )
    trained = train_adapter(trainer, tokenizer, out)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    results = {
        "train": {**trained.summary(trainer), "reward_first": rewards[0] if rewards else None,
                  "reward_last": rewards[-1] if rewards else None, "rewards": rewards, "rollout_calls": rollout.calls},
        "adapter": str(out / "adapter"), "config": config,
    }
    if panel is not None:
        panel.run("after", HFBackend(trainer.model.eval(), tokenizer, batch_size=args.rollout_batch_size))
        results["eval"] = panel.results()
    results["timings_s"] = {**(panel.timings if panel else {}), "total": time.time() - t0}
    write_results(out, results)
    if run is not None:
        if panel is not None:
            run.log(EvalPanel.metrics(results["eval"]))
        run.finish()
    print(json.dumps(results["train"], indent=2))
    if panel is not None:
        print("\n".join(EvalPanel.lines(results["eval"])))
    return results


if __name__ == "__main__":
    main(*parse_or_exit((GRPOArguments, GRPOConfig, ModelConfig), GRPO_DEFAULTS))
