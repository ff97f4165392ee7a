"""W&B logging shared by the scripts: one run per script, one key scheme, offline by default, secrets never logged.

The key scheme (``cbtgym dashboard`` builds its panels from these keys, cbtgym/training/dashboard.yaml):

* ``eval/...``: the before/after evaluation of :class:`~cbtgym.training.heldout.EvalPanel` (:func:`eval_metrics`):
  ``EvalPanel.metrics``' keys, ``eval/components/<side>_<name>`` and ``delta_<name>`` per reward component,
  ``eval/judges/<side>_failure_rate``, and the tables ``eval/components``, ``eval/transcripts``, ``eval/turns``.
* ``pairs/...``: DPO's preference pairs (:func:`log_pairs`): count, margin mean and histogram, judge failures, table.
* ``train/...``: what the TRL trainer logs. transformers' ``WandbCallback`` writes into the run :func:`init_wandb`
  started (it calls ``wandb.init`` only when ``wandb.run`` is None) and prefixes the trainer's keys with ``train/``
  (:data:`TRAINER_KEYS`); a GRPO reward function adds ``train/group/...`` through TRL's ``log_metric``
  (:func:`log_group_spread`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..envs.reward import judge_failed
from .config import SECRET_MARKERS, config_to_dict

#: The keys each TRL trainer logs through ``WandbCallback`` (TRL 1.16's names with the callback's ``train/``).
#: GRPO logs ``train/kl`` only with ``beta`` > 0 (GRPO_DEFAULTS has 0.0: no reference model on the CPU).
TRAINER_KEYS: dict[str, tuple[str, ...]] = {
    "dpo": ("train/loss", "train/rewards/margins", "train/rewards/accuracies", "train/rewards/chosen",
            "train/rewards/rejected"),
    "sft": ("train/loss", "train/mean_token_accuracy"),
    "grpo": ("train/loss", "train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/kl"),
}
#: What :func:`group_spread` returns; TRL logs them as ``train/<name>``.
GROUP_KEYS = ("group/reward_std", "group/reward_range", "group/zero_spread")
#: The transcript tables, one row per episode and one per policy turn.
TRANSCRIPTS_KEY, TURNS_KEY, COMPONENTS_KEY = "eval/transcripts", "eval/turns", "eval/components"
PAIRS_TABLE_KEY = "pairs/table"
#: Characters of a pair's prompt shown in ``pairs/table`` (the end of the conversation decides the pair).
PROMPT_TAIL_CHARS = 600


def run_name(method: str, model: str, seed: int) -> str:
    """``method/model/seed/time``, as CleanRL names runs."""
    short = model.rstrip("/").split("/")[-1].split(":")[-1] or model
    return f"{method}/{short}/{seed}/{time.strftime('%Y%m%d-%H%M%S')}"


def redacted_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of every secret-looking flag (``--hub_token X``, ``--api-key=X``) replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        secret = flag.startswith("-") and any(s in flag.lower() for s in SECRET_MARKERS)
        out.append(f"{flag}=***" if secret and eq else arg)
        hide_next = secret and not eq
    return out


@contextlib.contextmanager
def _argv_redacted() -> Iterator[None]:
    # W&B records sys.argv in the run's metadata when it starts: a token given as a flag would reach the run.
    saved = sys.argv
    sys.argv = saved[:1] + redacted_argv(saved[1:])
    try:
        yield
    finally:
        sys.argv = saved


def init_wandb(configs: Sequence[Any], method: str, model: str, seed: int, output_dir: str, enabled: bool = True):
    """Start a W&B run (``WANDB_MODE=offline`` unless the user set a mode) whose config is the fields of
    ``configs`` without secrets; returns the run or None.

    The trainer's ``WandbCallback`` logs into this run (``wandb.run``) rather than starting a second one.
    """
    if not enabled:
        return None  # the trainers get report_to=[] too, so nothing else starts a run
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    os.makedirs(output_dir, exist_ok=True)
    with _argv_redacted():
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "cbtgym"),
            name=run_name(method, model, seed),
            config=config_to_dict(*configs),
            dir=output_dir,
            reinit="finish_previous",
        )


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def component_metrics(block: Mapping[str, Any]) -> dict[str, float]:
    """``eval/components/<side>_<name>`` (mean over episodes of the per-episode mean) and ``delta_<name>`` (after -
    before) of an ``eval`` block's ``components`` (:func:`~cbtgym.training.evaluation.summarize_episodes`)."""
    out: dict[str, float] = {}
    comps = {side: block[side]["components"] for side in ("before", "after")}
    for side, values in comps.items():
        out.update({f"eval/components/{side}_{k}": v for k, v in values.items() if _number(v)})
    for k in comps["before"].keys() & comps["after"].keys():
        if _number(comps["before"][k]) and _number(comps["after"][k]):
            out[f"eval/components/delta_{k}"] = comps["after"][k] - comps["before"][k]
    return out


def judge_failure_rate(episodes: Sequence[Mapping[str, Any]]) -> float | None:
    """Share of the steps of ``episodes`` whose reward reports a failed judge (:func:`~cbtgym.envs.reward.judge_failed`;
    a reward without fallible judges, such as the rubric, never fails); None without steps."""
    steps = [c for ep in episodes for c in ep["components"]]
    return sum(judge_failed(c) for c in steps) / len(steps) if steps else None


def eval_metrics(block: Mapping[str, Any], episodes: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, float]:
    """Every scalar ``eval/...`` key of a run: ``EvalPanel.metrics(block)``, :func:`component_metrics` and
    ``eval/judges/<side>_failure_rate`` of the eval ``episodes`` (``{"before": [...], "after": [...]}``)."""
    from .heldout import EvalPanel

    out = {**EvalPanel.metrics(block), **component_metrics(block)}
    for side, eps in episodes.items():
        rate = judge_failure_rate(eps)
        if rate is not None:
            out[f"eval/judges/{side}_failure_rate"] = rate
    return out


def _reply_indices(ep: Mapping[str, Any]) -> list[int]:
    """Turn indices of the policy's replies: every therapist turn after the env's fixed opening (step ``i``
    of the record scores reply ``i``)."""
    return [i for i, t in enumerate(ep["transcript"]["turns"]) if t["speaker"] == "therapist"][1:]


def _policy_steps(ep: Mapping[str, Any]) -> Iterator[tuple[int, int, str, float | None, Mapping[str, Any]]]:
    """``(turn index, round, patient answer, step reward, step components)`` per policy reply of an eval record."""
    turns = ep["transcript"]["turns"]
    rewards = ep.get("rewards") or [None] * len(ep["components"])
    for n, (i, reward, comps) in enumerate(zip(_reply_indices(ep), rewards, ep["components"])):
        answer = turns[i + 1]["text"] if i + 1 < len(turns) and turns[i + 1]["speaker"] == "patient" else ""
        yield i, n + 1, answer, reward, comps


def transcript_text(ep: Mapping[str, Any]) -> str:
    """An eval record as text, each policy reply followed by its step reward and reward components."""
    scored = {i: (reward, comps) for i, _, _, reward, comps in _policy_steps(ep)}
    lines = []
    for i, t in enumerate(ep["transcript"]["turns"]):
        lines.append(f"{t['speaker']}: {t['text']}")
        if i in scored:
            reward, comps = scored[i]
            parts = ([] if reward is None else [f"reward {reward:+.3f}"]) + [
                f"{k}={v:.2f}" for k, v in comps.items() if _number(v)]
            lines.append(f"    [{' '.join(parts)}]")
    return "\n".join(lines)


def _transcripts_table(episodes: Mapping[str, Sequence[Mapping[str, Any]]], limit: int):
    import wandb

    table = wandb.Table(columns=["side", "key", "profile_id", "attitude", "reward", "transcript"])
    for side, eps in episodes.items():
        for ep in list(eps)[:limit]:
            table.add_data(side, ep["key"], ep["profile_id"], ep["attitude"], ep["reward"], transcript_text(ep))
    return table


def log_transcripts(run, key: str, episodes: Sequence[dict[str, Any]], limit: int = 32, side: str = "") -> None:
    """Episodes (``Episode.to_dict()`` records) as a ``wandb.Table`` under ``key``, one row per episode (the first
    ``limit``); the transcript shows each policy reply's step reward and components; ``side`` fills the side column
    (e.g. GRPO's training rollouts: ``log_transcripts(run, "train/rollouts", records, side="train")``)."""
    if run is None:
        return
    run.log({key: _transcripts_table({side: episodes}, limit)})


def _turns_table(episodes: Mapping[str, Sequence[Mapping[str, Any]]], limit: int):
    import wandb

    rows = [(side, ep) for side, eps in episodes.items() for ep in list(eps)[:limit]]
    names = sorted({k for _, ep in rows for c in ep["components"] for k, v in c.items() if _number(v)})
    table = wandb.Table(columns=["side", "key", "round", "therapist", "patient", "reward", *names])
    for side, ep in rows:
        for i, n, answer, reward, comps in _policy_steps(ep):
            table.add_data(side, ep["key"], n, ep["transcript"]["turns"][i]["text"], answer, reward,
                           *[comps.get(k) if _number(comps.get(k)) else None for k in names])
    return table


def _components_table(block: Mapping[str, Any]):
    import wandb

    before, after = block["before"]["components"], block["after"]["components"]
    table = wandb.Table(columns=["component", "before", "after", "delta"])
    for k in sorted(before.keys() | after.keys()):
        b, a = before.get(k), after.get(k)
        table.add_data(k, b, a, a - b if _number(a) and _number(b) else None)
    return table


def log_eval(run, block: Mapping[str, Any], episodes: Mapping[str, Sequence[Mapping[str, Any]]], limit: int = 32) -> None:
    """Log an evaluation to ``run``: :func:`eval_metrics`, the ``eval/components`` table (before, after, delta per
    component), ``eval/transcripts`` (one row per episode and side) and ``eval/turns`` (one row per policy reply,
    a column per reward component). ``limit`` caps the episodes per side in the tables."""
    if run is None:
        return
    run.log({**eval_metrics(block, episodes), COMPONENTS_KEY: _components_table(block),
             TRANSCRIPTS_KEY: _transcripts_table(episodes, limit), TURNS_KEY: _turns_table(episodes, limit)})


def candidate_counts(path) -> dict[str, int]:
    """``{"candidates": all candidates, "failed": those a judge failed to score}`` of a candidates.jsonl."""
    from ..jsonl import read_jsonl
    from .preferences import count_failures

    total = sum(len(st["scores"]) for rec in read_jsonl(path) for st in rec["states"])
    return {"candidates": total, "failed": count_failures(path)["candidates"]}


def _content(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def pair_metrics(pairs: Sequence[Mapping[str, Any]], counts: Mapping[str, int]) -> dict[str, float]:
    """``pairs/count``, ``pairs/margin_mean`` and the judge failures of collection (``pairs/judge_failures``,
    ``pairs/judge_failure_rate``: failed / all candidates, :func:`candidate_counts`)."""
    margins = [float(p["margin"]) for p in pairs]
    out = {"pairs/count": len(pairs), "pairs/judge_failures": counts["failed"]}
    if margins:
        out["pairs/margin_mean"] = sum(margins) / len(margins)
    if counts["candidates"]:
        out["pairs/judge_failure_rate"] = counts["failed"] / counts["candidates"]
    return out


def log_pairs(run, pairs: Sequence[Mapping[str, Any]], candidates_path, limit: int = 200) -> None:
    """Log DPO's pairs to ``run``: :func:`pair_metrics`, ``pairs/margin`` (histogram of the score margins) and
    ``pairs/table`` (the first ``limit`` pairs: id, the prompt's last :data:`PROMPT_TAIL_CHARS` characters, chosen,
    rejected, their scores and margin)."""
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["id", "prompt_tail", "chosen", "rejected", "score_chosen", "score_rejected", "margin"])
    for p in list(pairs)[:limit]:
        table.add_data(p["id"], _content(p["prompt"])[-PROMPT_TAIL_CHARS:], _content(p["chosen"]),
                       _content(p["rejected"]), p.get("score_chosen"), p.get("score_rejected"), p["margin"])
    logged: dict[str, Any] = {**pair_metrics(pairs, candidate_counts(candidates_path)), PAIRS_TABLE_KEY: table}
    if pairs:
        logged["pairs/margin"] = wandb.Histogram([float(p["margin"]) for p in pairs])
    run.log(logged)


def group_spread(rewards: Sequence[float | None], group_size: int) -> dict[str, float]:
    """How far the rewards of each GRPO group (consecutive ``group_size`` completions of one prompt) spread.

    Returns the :data:`GROUP_KEYS`: ``group/reward_std`` (mean within-group population std), ``group/reward_range``
    (mean max - min) and ``group/zero_spread`` (share of groups whose rewards are all equal: no learning signal).
    Unscored completions (None) are left out; a group with fewer than two scores counts as zero spread.
    """
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"group_size: {len(rewards)} rewards do not split into groups of {group_size}; "
                         "pass the trainer's num_generations")
    stds, ranges = [], []
    for start in range(0, len(rewards), group_size):
        g = [float(r) for r in rewards[start:start + group_size] if _number(r)]
        mean = sum(g) / len(g) if g else 0.0
        stds.append(math.sqrt(sum((r - mean) ** 2 for r in g) / len(g)) if len(g) > 1 else 0.0)
        ranges.append(max(g) - min(g) if len(g) > 1 else 0.0)
    n = len(stds)
    return {"group/reward_std": sum(stds) / n if n else 0.0, "group/reward_range": sum(ranges) / n if n else 0.0,
            "group/zero_spread": sum(r == 0.0 for r in ranges) / n if n else 0.0}


def log_group_spread(log_metric: Callable[[str, float], None] | None, rewards: Sequence[float | None],
                     group_size: int) -> None:
    """Hand :func:`group_spread` to TRL's ``log_metric`` (the kwarg GRPOTrainer passes reward functions): TRL averages
    it over the logging step and ``WandbCallback`` logs it as ``train/group/...`` beside ``train/kl``. No-op when
    ``log_metric`` is None (a caller outside the trainer)."""
    if log_metric is None:
        return
    for name, value in group_spread(rewards, group_size).items():
        log_metric(name, value)
