"""W&B logging shared by the scripts: offline by default, secrets never logged."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from .config import config_to_dict


def run_name(method: str, model: str, seed: int) -> str:
    """``method/model/seed/time``, as CleanRL names runs."""
    short = model.rstrip("/").split("/")[-1].split(":")[-1] or model
    return f"{method}/{short}/{seed}/{time.strftime('%Y%m%d-%H%M%S')}"


def init_wandb(configs: Sequence[Any], method: str, model: str, seed: int, output_dir: str, enabled: bool = True):
    """Start a W&B run (``WANDB_MODE=offline`` unless the user set a mode) whose config is the fields of
    ``configs`` without secrets; returns the run or None."""
    if not enabled:
        return None  # the trainers get report_to=[] too, so nothing else starts a run
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    os.makedirs(output_dir, exist_ok=True)
    return wandb.init(
        project=os.environ.get("WANDB_PROJECT", "cbtgym"),
        name=run_name(method, model, seed),
        config=config_to_dict(*configs),
        dir=output_dir,
        reinit="finish_previous",
    )


def log_transcripts(run, key: str, episodes: Sequence[dict[str, Any]], limit: int = 32) -> None:
    """Episodes (``Episode.to_dict()`` records) as a ``wandb.Table``."""
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["key", "profile_id", "attitude", "reward", "transcript"])
    for ep in list(episodes)[:limit]:
        text = "\n".join(f"{t['speaker']}: {t['text']}" for t in ep["transcript"]["turns"])
        table.add_data(ep["key"], ep["profile_id"], ep["attitude"], ep["reward"], text)
    run.log({key: table})
