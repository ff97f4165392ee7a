"""Supervised fine-tuning of a therapist on transcripts, with TRL's SFTTrainer and LoRA.

    python train/sft.py                                        # embedded CPU default (best-of-k self-distillation)
    python train/sft.py --data outputs/teacher.jsonl           # transcripts from a strong teacher (see README)
    python train/sft.py --config configs/sft/llama31_8b_teacher.yaml
    python train/sft.py --help                                 # every SFTConfig / ModelConfig field, and cbtgym's

Data: a JSONL of episodes written by `cbtgym simulate` (e.g. with a strong teacher model as therapist,
as Tahir generated 20-session courses) or of conversations ({"messages": [...]}, therapist = assistant).
With `--data best-of-k` (the default) the teacher is the policy itself plus the judge: k candidates are
sampled at each therapist turn of sessions with the simulated patient, and the best one (if it scores at
least --min_score) becomes the target. Only therapist turns are learned; patient turns are prompt.
Arguments: cbtgym's SFTArguments beside TRL's SFTConfig and ModelConfig (defaults: SFT_DEFAULTS).
Writes <output_dir>/results.json (training summary and, with --eval, the before/after evaluation: the reward,
the held-out panel, diversity and safety blocks of cbtgym.training.heldout).
"""

from __future__ import annotations

import json
import time

from trl import ModelConfig, SFTConfig

from cbtgym.training.arguments import SFT_DEFAULTS, SFTArguments
from cbtgym.training.config import config_to_dict, parse_or_exit


def main(args: SFTArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    from datasets import Dataset
    from tqdm import tqdm
    from trl import SFTTrainer

    from cbtgym.backends import HFBackend, Sampling
    from cbtgym.rollout import EpisodeSpec
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.heldout import EvalPanel
    from cbtgym.training.policy import load_policy, lora_from_model_config
    from cbtgym.training.preferences import collect_candidates
    from cbtgym.training.ranks import Shard
    from cbtgym.training.runs import peak_rss_gb, start_run, train_adapter, write_results
    from cbtgym.training.sft_data import best_of_k_examples, dedupe, load_sft_examples
    from cbtgym.training.tracking import log_eval

    t0 = time.time()
    shard = Shard.current()  # under a launcher: this process plays its share of every collection and eval stage
    config = config_to_dict(args, training_args, model_args)
    out, run = start_run("sft", args, training_args, model_args)
    model, tokenizer = load_policy(model_args.model_name_or_path, load_in_4bit=model_args.load_in_4bit,
                                   dtype=model_args.dtype)
    system = therapist_prompt(args.therapist_prompt)
    env_kwargs = dict(max_rounds=args.rounds, reward_fn="rubric")
    panel = EvalPanel(args, out, env_kwargs=dict(env_kwargs, profiles=args.eval_profiles), rounds=args.rounds,
                      max_new_tokens=args.max_new_tokens, batch_size=args.rollout_batch_size,
                      seed=training_args.seed, shard=shard) if args.eval else None
    if panel is not None:
        panel.run("before", HFBackend(model, tokenizer))

    if args.data == "best-of-k":
        collect = [EpisodeSpec(seed=training_args.seed * 100000 + i) for i in range(args.collect_episodes)]
        with tqdm(total=len(collect), desc="best-of-k data", unit="ep", disable=not shard.is_main) as bar:
            path = collect_candidates(
                HFBackend(model, tokenizer, batch_size=args.rollout_batch_size), system, collect, out, k=args.k,
                sampling=Sampling(max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=0.95),
                batch_size=args.rollout_batch_size, progress=bar.update, shard=shard, profiles=args.train_profiles,
                **env_kwargs)
        examples = best_of_k_examples(path, args.min_score)
    else:
        examples = load_sft_examples(args.data, system)
    examples = dedupe(examples)
    if not examples:
        raise SystemExit(f"error: min_score: best-of-k kept no example at {args.min_score}; lower --min_score or "
                         "sample more (--k, --collect_episodes)")
    if shard.is_main:
        with open(out / "sft_examples.jsonl", "w") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in examples)

    trainer = SFTTrainer(model=model, args=training_args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=lora_from_model_config(model, model_args))
    trained = train_adapter(trainer, tokenizer, out)

    results: dict = {"train": {"examples": len(examples), **trained.summary(trainer)},
                     "adapter": str(out / "adapter"), "config": config}
    if panel is not None:
        panel.run("after", HFBackend(trainer.model.eval(), tokenizer))
        results["eval"] = panel.results()
    results["timings_s"] = {**(panel.timings if panel else {}), "total": time.time() - t0}
    results["peak_rss_gb"] = peak_rss_gb()
    write_results(out, results)
    if run is not None:
        if panel is not None:
            log_eval(run, results["eval"], panel.episodes)
        run.finish()
    if not shard.is_main:
        return results
    print(json.dumps({k: results[k] for k in ("train",) + (("eval",) if args.eval else ())}, indent=2))
    if panel is not None:
        print("\n".join(EvalPanel.lines(results["eval"])))
    return results


if __name__ == "__main__":
    main(*parse_or_exit((SFTArguments, SFTConfig, ModelConfig), SFT_DEFAULTS))
