"""What every training script does around its trainer: the run folder and W&B, resuming, the
changed-parameter check, saving the adapter and writing results.json."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tracking import init_wandb


def start_run(method: str, script_args: Any, training_args: Any, model_args: Any):
    """Seed everything, create ``output_dir`` and start W&B when ``report_to`` names it; returns ``(out, run)``.

    ``training_args.output_dir`` is the run folder on the command line; the trainer writes its checkpoints to
    ``<output_dir>/checkpoints`` (pairs, adapter, evals and results.json sit beside them), and logs to the run.
    Under several processes only the main one starts a run (the others get None): one run per job.
    """
    from transformers import set_seed

    from .ranks import Shard

    set_seed(training_args.seed)
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = "wandb" in (training_args.report_to or []) and Shard.current().is_main
    run = init_wandb((script_args, training_args, model_args), method, model_args.model_name_or_path,
                     training_args.seed, str(out), enabled=wanted)
    training_args.output_dir = str(out / "checkpoints")
    if run is None:  # W&B off: the trainer must not start a run of its own (other integrations stay)
        training_args.report_to = [r for r in training_args.report_to or [] if r != "wandb"]
    training_args.run_name = run.name if run is not None else None
    return out, run


def last_checkpoint(path: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder under ``path`` (the resume point), or None."""
    path = Path(path)
    ckpts = sorted(path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if path.exists() else []
    return str(ckpts[-1]) if ckpts else None


@dataclass
class TrainOutcome:
    """What :func:`train_adapter` reports: TRL's ``TrainOutput``, how many trainable tensors moved, the time."""

    result: Any
    changed: int
    trainable: int
    seconds: float

    def summary(self, trainer) -> dict[str, Any]:
        """The keys every script's ``results["train"]`` shares."""
        return {"steps": trainer.state.global_step, "train_loss": self.result.training_loss,
                "trainable_tensors_changed": self.changed, "trainable_tensors": self.trainable}


def train_adapter(trainer, tokenizer, out: Path) -> TrainOutcome:
    """Train (resuming from the last checkpoint), count the trainable tensors that changed (the check that the
    adapter learned anything), and save adapter and tokenizer to ``<out>/adapter`` (the main process, once)."""
    import torch

    from .ranks import Shard

    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    t = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint(trainer.args.output_dir))
    seconds = time.time() - t
    changed = sum(not torch.equal(start[n], p.detach()) for n, p in trainer.model.named_parameters() if n in start)
    shard = Shard.current()
    if shard.is_main:
        trainer.model.save_pretrained(str(out / "adapter"))
        tokenizer.save_pretrained(str(out / "adapter"))
    shard.barrier()
    return TrainOutcome(result, int(changed), len(start), seconds)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (what ``/usr/bin/time -v`` reports as maximum RSS)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)  # bytes on macOS, KiB on Linux


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """``<out>/results.json`` (configs in it went through ``config_to_dict``: no secrets), by the main process."""
    from .ranks import Shard

    path = out / "results.json"
    if Shard.current().is_main:
        path.write_text(json.dumps(results, indent=2))
    return path
