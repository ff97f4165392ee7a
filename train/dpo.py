"""DPO from environment rollouts: collect preference pairs with the simulated patient and the judge,
train a LoRA therapist with TRL's DPOTrainer, and evaluate base vs trained on held-out profiles.

    python train/dpo.py                                   # embedded CPU default (SmolLM2-135M, < 20 min, 2 cores)
    python train/dpo.py --config configs/dpo/llama31_8b_qlora.yaml   # GPU
    python train/dpo.py --output_dir outputs/x --k 6      # CLI flags override the YAML
    python train/dpo.py --help                            # every DPOConfig / ModelConfig field, and cbtgym's

Arguments: cbtgym's DPOArguments (sessions, patient, judge, pairs, evaluation) beside TRL's DPOConfig and
ModelConfig; the script's defaults for TRL fields are DPO_DEFAULTS (cbtgym/training/arguments.py).
Writes <output_dir>/results.json with eval.before/after/delta (paired bootstrap CI over episodes), the
eval.heldout/diversity/safety blocks (cbtgym.training.heldout) and the training summary; every stage resumes
from its files when the run is restarted.
"""

from __future__ import annotations

import json
import time

from trl import DPOConfig, ModelConfig

from cbtgym.training.arguments import DPO_DEFAULTS, DPOArguments
from cbtgym.training.config import config_to_dict, parse_or_exit


def main(args: DPOArguments, training_args: DPOConfig, model_args: ModelConfig) -> dict:
    from datasets import Dataset
    from tqdm import tqdm
    from trl import DPOTrainer

    from cbtgym.backends import HFBackend, Sampling, make_backend
    from cbtgym.jsonl import read_jsonl
    from cbtgym.patients import LLMPatient
    from cbtgym.therapists import therapist_prompt
    from cbtgym.training.heldout import EvalPanel
    from cbtgym.training.policy import RolloutPolicy, load_policy, lora_from_model_config
    from cbtgym.training.preferences import (CandidateScoring, collect_candidates, collection_specs, count_failures,
                                             pairs_from_candidates, trim_prompt)
    from cbtgym.training.ranks import Shard
    from cbtgym.training.runs import peak_rss_gb, start_run, train_adapter, write_results
    from cbtgym.training.tracking import log_eval, log_pairs

    t0 = time.time()
    shard = Shard.current()  # under a launcher: this process plays its share of every collection and eval stage
    config = config_to_dict(args, training_args, model_args)
    out, run = start_run("dpo", args, training_args, model_args)
    timings: dict[str, float] = {}

    env_kwargs = dict(profiles=args.train_profiles, max_rounds=args.rounds, reward_fn=args.reward)
    if args.patient != "rule":
        # A model of its own: the policy's weights change in training, the patient's must not.
        patient_backend = make_backend(args.patient)
        if isinstance(patient_backend, HFBackend):  # the patient answers all k candidates (x rollouts) of a chunk in one call
            patient_backend.batch_size = max(patient_backend.batch_size,
                                             args.rollout_batch_size * args.k * args.scoring_rollouts)
        env_kwargs["patient"] = LLMPatient.configured(
            patient_backend, args.patient_max_new_tokens, args.patient_temperature, args.patient_ratings,
            training_args.seed, args.patient_disclosure)
    eval_kwargs = {**env_kwargs, "profiles": args.eval_profiles}
    model, tokenizer = load_policy(model_args.model_name_or_path, load_in_4bit=model_args.load_in_4bit,
                                   dtype=model_args.dtype)
    policy = RolloutPolicy(args.rollout_backend, model_args.model_name_or_path, tokenizer,
                           batch_size=args.rollout_batch_size, max_lora_rank=model_args.lora_r)

    # 1. the base policy on held-out profiles (and crisis probes, and the held-out panel when asked for)
    panel = EvalPanel(args, out, env_kwargs=eval_kwargs, rounds=args.rounds, max_new_tokens=args.max_new_tokens,
                      batch_size=args.rollout_batch_size, seed=training_args.seed, shard=shard)
    base = policy.backend(model)
    panel.run("before", base)

    # 2. preference pairs from rollouts on training profiles
    collect = collection_specs(args.train_profiles, args.collect_episodes, args.risk_episodes, training_args.seed,
                               args.risk_opening)
    with tqdm(total=len(collect), desc="collect pairs", unit="ep", disable=not shard.is_main) as bar:
        t = time.time()
        cand_path = collect_candidates(
            base, therapist_prompt(args.therapist_prompt), collect, out, k=args.k,
            sampling=Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95),
            scoring=CandidateScoring(args.scoring, args.scoring_rollouts), batch_size=args.rollout_batch_size,
            greedy_anchor=args.pairing != "extremes", explore_prefixes=args.explore_prefixes,
            advance_best=args.advance == "best", crisis_k=args.crisis_k or None, progress=bar.update, shard=shard, **env_kwargs)
        timings["collect_s"] = time.time() - t
    base.close()  # its prompt-state cache would sit beside the training activations
    pairs = pairs_from_candidates(cand_path, args.min_margin, args.pairing)
    if not pairs:
        raise SystemExit(f"error: min_margin: no pair reached {args.min_margin}; sample more candidates (--k), "
                         "more episodes (--collect_episodes) or lower --min_margin")
    if shard.is_main:  # every process built the same pairs from the same candidates file
        with open(out / "pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps(p) + "\n" for p in pairs)
        Dataset.from_list([{"prompt": trim_prompt(p["prompt"], args.prompt_messages), "chosen": p["chosen"],
                            "rejected": p["rejected"]} for p in pairs]).save_to_disk(str(out / "pairs_dataset"))
    shard.barrier()
    # read back from the run folder: TRL's cached maps (tokens, reference log-probs) land there, one copy for all processes
    dataset = Dataset.load_from_disk(str(out / "pairs_dataset"))

    # 3. DPO with LoRA, checkpointed; a restarted run resumes from the last checkpoint
    peft_config = lora_from_model_config(model, model_args, args.lora_layers)
    trainer = DPOTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    trained = train_adapter(trainer, tokenizer, out)
    timings["train_s"] = trained.seconds

    # 4. the trained policy on the same held-out episodes (LoRA merged: rollouts at the base model's speed)
    merged = trainer.model.merge_and_unload().eval() if args.rollout_backend == "hf" else None
    panel.run("after", policy.backend(merged, str(out / "adapter")))
    policy.close()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    margins = [p["margin"] for p in pairs]
    results = {
        "eval": panel.results(),
        "train": {
            "pairs": len(pairs),
            "candidate_states": sum(len(r["states"]) for r in read_jsonl(cand_path)),
            "judge_failures": count_failures(cand_path, args.pairing),
            "pair_margin_mean": sum(margins) / len(margins),
            **trained.summary(trainer),
            "loss_first": logs[0]["loss"] if logs else None,
            "loss_last": logs[-1]["loss"] if logs else None,
            "reward_accuracy_last": logs[-1].get("rewards/accuracies") if logs else None,
        },
        "timings_s": {**panel.timings, **timings, "total": time.time() - t0},
        "peak_rss_gb": peak_rss_gb(),
        "adapter": str(out / "adapter"),
        "config": config,
    }
    write_results(out, results)
    if run is not None:
        log_eval(run, results["eval"], panel.episodes)
        log_pairs(run, pairs, cand_path)
        run.finish()
    if not shard.is_main:
        return results
    d = results["eval"]["delta"]
    print(f"\nmean episode reward {results['eval']['before']['mean_reward']:.3f} -> {results['eval']['after']['mean_reward']:.3f}; "
          f"delta {d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}) over {results['eval']['episodes']} "
          f"episodes; {len(pairs)} pairs; {results['timings_s']['total'] / 60:.1f} min, peak RSS {results['peak_rss_gb']:.1f} GB")
    print("\n".join(EvalPanel.lines(results["eval"], reward=False)) + f"\nresults: {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main(*parse_or_exit((DPOArguments, DPOConfig, ModelConfig), DPO_DEFAULTS))
