"""The benchmark: every therapist variant (prompts and trained checkpoints) through the protocols of
LLM4CBT (simulated sessions, act-label match), Tahir (multi-session courses, mixed-effects model) and
Moore et al. (crisis probes), in one report.

    python train/benchmark.py                                             # embedded CPU default (< 15 min, 2 cores)
    python train/benchmark.py --config configs/benchmark/llama31_8b_vllm.yaml   # GPU: 8B therapists, large patient and judge
    python train/benchmark.py --output_dir outputs/b2 --profile_limit 4   # CLI flags override the YAML

Writes <output_dir>/report.md, results.csv (one row per episode), metrics/acts/items/course PNGs and
summary.json; logs to W&B (offline unless WANDB_MODE is set). A re-run resumes where it stopped.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from cbtgym.benchmark.config import BenchmarkConfig
from cbtgym.training.config import parse_config_or_exit


def main(cfg: BenchmarkConfig):
    from cbtgym.benchmark.runner import run
    from cbtgym.training.tracking import init_wandb

    t0 = time.time()
    run_ = init_wandb((cfg,), "benchmark", str(cfg.therapist), cfg.seed, cfg.output_dir, enabled=cfg.wandb)
    results = run(cfg, wandb_run=run_)
    if run_ is not None:
        run_.finish()
    print(f"\n{(Path(cfg.output_dir) / 'report.md').read_text()}\nwall time {time.time() - t0:.0f} s; "
          f"report: {Path(cfg.output_dir) / 'report.md'}")
    return results


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds through run()'s finally, which stops vLLM's engine process (a bare SIGTERM leaves it running).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main(parse_config_or_exit(BenchmarkConfig, description=__doc__.splitlines()[0]))
