"""The evaluation a training script ends with, in four blocks the training reward alone cannot game.

Every script evaluates the policy before and after training on the same held-out episodes (greedy):

* ``eval``: the training reward (before, after and the paired delta: :func:`~cbtgym.training.evaluation.compare`).
* ``eval.heldout``: the same policies with a patient and/or reward the training reward did not contain
  (``--heldout_patient``, ``--heldout_reward``); off by default, when the block says why and how to turn it on.
* ``eval.diversity``: :func:`diversity` of the policy's replies (a collapsed policy repeats itself).
* ``eval.safety``: :func:`safety_ok` of the eval steps and the pass rate on the crisis probes
  (:func:`evaluate_crisis`, the benchmark's probes and reply checker).
* ``eval.unguarded`` (``--guardrail``, the default): the blocks above evaluate the policy as deployed, behind the
  crisis guardrail (:class:`~cbtgym.therapists.guardrail.CrisisGuardrail`); this block holds the policy alone:
  training reward, diversity and safety. Only the sessions where the guardrail replied are played again without it
  (the others are the same greedy episodes); the crisis probes are answered again.

:class:`EvalPanel` runs all of them for one policy state (``run("before", backend)``, ``run("after", backend)``)
and builds the results.json block, the W&B metrics and the console lines, so the scripts share one code path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..wording import opening, words
from .evaluation import compare, eval_specs, evaluate_backend
from .ranks import Shard, run_chunks
from .stats import paired_bootstrap

SIDES = ("before", "after")
HELDOUT_OFF = "none"


def policy_replies(episode: dict[str, Any]) -> list[str]:
    """The therapist turns of an eval record the policy wrote: all but the first (the env's fixed opening line)."""
    return [t["text"] for t in episode["transcript"]["turns"] if t["speaker"] == "therapist"][1:]


def diversity(episodes: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """How varied the policy's replies are over eval records (``Episode.to_dict()``).

    Returns:
        ``distinct2``: unique word bigrams / all word bigrams over every policy reply (bigrams within a reply);
        ``repeated_openings``: the share of all policy replies that repeat the first five words (:func:`words`)
        of an earlier policy reply of the same session (so a session's first reply never counts as a repeat;
        SmolLM2's base on the default eval: 0.65, 88 of 136). Each is None when there is nothing to count.
    """
    bigrams: list[tuple[str, str]] = []
    replies = repeated = 0
    for ep in episodes:
        seen: set[tuple[str, ...]] = set()
        for reply in policy_replies(ep):
            w = words(reply)
            bigrams += zip(w, w[1:])
            first = opening(reply)
            replies += 1
            repeated += first in seen
            seen.add(first)
    return {"distinct2": len(set(bigrams)) / len(bigrams) if bigrams else None,
            "repeated_openings": repeated / replies if replies else None}


def step_values(episode: dict[str, Any], name: str) -> list[float]:
    """The numeric values of reward component ``name`` over an episode's steps (None and missing skipped)."""
    return [float(c[name]) for c in episode["components"] if isinstance(c.get(name), (int, float))
            and not isinstance(c.get(name), bool)]


def safety_ok(episodes: Sequence[dict[str, Any]]) -> float | None:
    """Mean of the per-step ``safety_ok`` component over all eval steps (steps without a verdict skipped; None: none had one)."""
    values = [v for ep in episodes for v in step_values(ep, "safety_ok")]
    return float(np.mean(values)) if values else None



def paired_delta(before: Sequence[float | None], after: Sequence[float | None]) -> dict[str, Any] | None:
    """:func:`paired_bootstrap` over the pairs where both values are known (``n`` of them); None when there is none."""
    pairs = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
    if not pairs:
        return None
    return {**paired_bootstrap([b for b, _ in pairs], [a for _, a in pairs]), "n": len(pairs)}


def crisis_pass(records: Sequence[dict[str, Any]]) -> float | None:
    """Share of crisis probes whose reply passed the check (probes the checker could not judge skipped)."""
    values = [r["pass"] for r in records if r["pass"] is not None]
    return float(np.mean(values)) if values else None


def evaluate_crisis(backend, prompt: str, out_path: str | Path, *, max_new_tokens: int,
                    probes: Sequence[dict[str, Any]] | None = None, checker: Any = "embedded",
                    batch_size: int = 16, shard: Shard | None = None) -> list[dict[str, Any]]:
    """The policy's reply to each crisis probe (after the session opening, greedy), checked as the benchmark does.

    The pieces of :func:`cbtgym.benchmark.protocols.run_crisis_probes` with one policy: the conversation, the
    gold crisis types and the record. Records go to ``out_path`` a batch at a time; a rerun with the same
    settings answers only the probes not yet there.

    Args:
        backend: The policy.
        prompt: Therapist prompt name or path.
        out_path: The resumable JSONL (``crisis_before.jsonl`` / ``crisis_after.jsonl``).
        max_new_tokens: Reply budget (the eval's).
        probes: From :func:`~cbtgym.benchmark.protocols.load_crisis_probes` (default: its default set).
        checker: A reply checker, or a spec for ``make_judge("reply_check", ...)`` (``"embedded"``, ``"rules"``).
        batch_size: Probes answered per backend call.
        shard: This process's place when several share the run (:mod:`.ranks`).

    Returns:
        One record per probe, in ``probes`` order (``pass``: 1.0 / 0.0 / None).
    """
    from rewards.factory import make_judge

    from ..backends.base import Sampling
    from ..benchmark.protocols import check_probe_replies, generate_for, load_crisis_probes, probe_conversation, probe_record
    from ..therapists import therapist_prompt

    probes = load_crisis_probes() if probes is None else list(probes)
    system, sampling = therapist_prompt(prompt), Sampling(max_new_tokens=max_new_tokens)
    settings = {"backend": backend, "prompt": system, "sampling": sampling, "checker": checker}
    checkers: list[Any] = []  # built on the first chunk only: a finished file needs none

    def work(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not checkers:
            checkers.append(make_judge("reply_check", checker, detector=make_judge("crisis", checker))
                            if isinstance(checker, str) else checker)
        replies = generate_for({"policy": backend}, [("policy", probe_conversation(system, p)) for p in chunk], sampling, None)
        return [probe_record(p, reply, ch) for p, reply, ch in zip(chunk, replies, check_probe_replies(checkers[0].check, chunk, replies))]

    return run_chunks(out_path, settings, probes, key=lambda p: p["id"], batch_size=batch_size, work=work, shard=shard)


def heldout_env_kwargs(args: Any, rounds: int, seed: int = 0) -> dict[str, Any]:
    """The env of the held-out panel: the eval profiles, ``args.heldout_patient`` and ``args.heldout_reward``.

    ``heldout_patient`` is ``"rule"`` or a backend spec (``"embedded"``: a copy of SmolLM2 of its own); an LLM
    patient decodes with the script's ``patient_*`` settings where it has them, else their defaults.
    """
    kwargs: dict[str, Any] = dict(profiles=args.eval_profiles, max_rounds=rounds, reward_fn=args.heldout_reward)
    if args.heldout_patient != "rule":
        from ..backends import make_backend
        from ..patients import LLMPatient

        kwargs["patient"] = LLMPatient.configured(
            make_backend(args.heldout_patient), getattr(args, "patient_max_new_tokens", 32),
            getattr(args, "patient_temperature", 0.7), getattr(args, "patient_ratings", "end"), seed,
            getattr(args, "patient_disclosure", "gated"))
    return kwargs


def diversity_block(episodes: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """``before``/``after`` :func:`diversity` of ``{"before": records, "after": records}`` and their difference."""
    div = {side: diversity(episodes[side]) for side in SIDES}
    return {**div, "delta": {k: None if div["before"][k] is None or div["after"][k] is None
                             else div["after"][k] - div["before"][k] for k in div["before"]}}


def safety_block(episodes: dict[str, Sequence[dict[str, Any]]],
                 crisis: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """``before``/``after`` :func:`safety_ok` and :func:`crisis_pass` (``crisis`` empty: no probes) and paired deltas."""
    block: dict[str, Any] = {side: {"safety_ok": safety_ok(episodes[side]),
                                    "crisis_pass": crisis_pass(crisis[side]) if crisis else None} for side in SIDES}
    block["delta"] = {
        "safety_ok": paired_delta([safety_ok([e]) for e in episodes["before"]],
                                  [safety_ok([e]) for e in episodes["after"]]),
        "crisis_pass": paired_delta([r["pass"] for r in crisis["before"]], [r["pass"] for r in crisis["after"]])
        if crisis else None,
    }
    block["crisis_probes"] = len(crisis.get("before", []))
    if not crisis:
        block["crisis_skipped"] = "crisis_per_type is 0; --crisis_per_type 4 runs the default probes"
    return block


class EvalPanel:
    """The before/after evaluation of one training run: ``eval``, ``eval.heldout``, ``eval.diversity``, ``eval.safety``.

    Args:
        args: The script's :class:`~cbtgym.training.arguments.EvalArguments` (with ``therapist_prompt``).
        out: The run folder; the eval, held-out and crisis records are written (and resumed) there.
        env_kwargs: The eval env (the training env's patient and reward, on ``args.eval_profiles``).
        rounds: Therapist turns per session (the held-out env's ``max_rounds``).
        max_new_tokens: Reply budget of the policy.
        batch_size: Sessions (and probes) per policy call.
        seed: Seed of a held-out LLM patient's sampling.
        checker: The crisis probes' reply checker (a spec for ``make_judge("reply_check", ...)`` or a checker).
        detector: The guardrail's crisis detector (default: the embedded one).
        shard: This process's place when several share the run: each plays its share of every stage (:mod:`.ranks`).
    """

    def __init__(self, args: Any, out: str | Path, *, env_kwargs: dict[str, Any], rounds: int, max_new_tokens: int,
                 batch_size: int = 16, seed: int = 0, checker: Any = "embedded", detector: Any = None,
                 shard: Shard | None = None) -> None:
        self.args, self.out, self.env_kwargs, self.checker, self.detector = args, Path(out), env_kwargs, checker, detector
        self.shard = shard
        self.guarded = bool(getattr(args, "guardrail", False))
        self.rounds, self.max_new_tokens, self.batch_size, self.seed = rounds, max_new_tokens, batch_size, seed
        self.specs = eval_specs(args.eval_profiles, args.eval_attitudes, args.eval_seeds, args.eval_limit)
        self.heldout_on = args.heldout_patient != HELDOUT_OFF
        self.episodes: dict[str, list[dict[str, Any]]] = {}
        self.heldout: dict[str, list[dict[str, Any]]] = {}
        self.crisis: dict[str, list[dict[str, Any]]] = {}
        # the policy alone, when the blocks above are the guarded policy
        self.unguarded: dict[str, list[dict[str, Any]]] = {}
        self.unguarded_crisis: dict[str, list[dict[str, Any]]] = {}
        self.guardrail_replies: dict[str, int] = {}
        self.timings: dict[str, float] = {}

    def run(self, side: str, backend) -> list[dict[str, Any]]:
        """Evaluate ``backend`` as the policy ``side`` (``"before"``/``"after"`` training); returns the eval episodes.

        Writes ``eval_<side>.jsonl``, ``crisis_<side>.jsonl`` and (held-out panel on) ``eval_heldout_<side>.jsonl``
        in the run folder, each resumed on a rerun, and with the guardrail ``eval_unguarded_<side>.jsonl`` and
        ``crisis_unguarded_<side>.jsonl``; ``timings`` gets ``eval_<side>_s``, ``crisis_<side>_s``,
        ``heldout_<side>_s`` and ``unguarded_<side>_s``.
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES} (got {side!r})")
        a = self.args
        guard = None
        if self.guarded:
            from ..therapists.guardrail import CrisisGuardrail

            guard = CrisisGuardrail(backend, detector=self.detector)
        policy = guard or backend
        t = time.time()
        self.episodes[side] = self._sessions(policy, self.specs, f"eval_{side}", f"eval {side}", self.env_kwargs)
        self.timings[f"eval_{side}_s"] = time.time() - t
        if a.crisis_per_type > 0:
            t = time.time()
            self.crisis[side] = self._probes(policy, f"crisis_{side}")
            self.timings[f"crisis_{side}_s"] = time.time() - t
        if self.heldout_on:
            t = time.time()
            # the held-out patient's model lives for one side only: training in between needs the memory
            heldout_kwargs = heldout_env_kwargs(a, self.rounds, self.seed)
            specs = eval_specs(a.eval_profiles, a.eval_attitudes, a.eval_seeds, a.heldout_limit)
            try:
                self.heldout[side] = self._sessions(policy, specs, f"eval_heldout_{side}", f"held-out {side}",
                                                    heldout_kwargs)
            finally:
                close = getattr(getattr(heldout_kwargs.get("patient"), "backend", None), "close", None)
                if close is not None:
                    close()
            self.timings[f"heldout_{side}_s"] = time.time() - t
        if guard is not None:
            t = time.time()
            fired = [ep for ep in self.episodes[side] if any(guard.wrote(r) for r in policy_replies(ep))]
            self.guardrail_replies[side] = sum(guard.wrote(r) for ep in fired for r in policy_replies(ep))
            fired_keys = {ep["key"] for ep in fired}
            replayed = {ep["key"]: ep for ep in self._sessions(
                backend, [s for s in self.specs if s.key in fired_keys], f"eval_unguarded_{side}", f"unguarded {side}",
                self.env_kwargs)}
            self.unguarded[side] = [replayed.get(ep["key"], ep) for ep in self.episodes[side]]
            if a.crisis_per_type > 0:
                self.unguarded_crisis[side] = self._probes(backend, f"crisis_unguarded_{side}")
            self.timings[f"unguarded_{side}_s"] = time.time() - t
        return self.episodes[side]

    def _sessions(self, policy, specs, name: str, desc: str, env_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        return evaluate_backend(policy, self.args.therapist_prompt, specs, self.out / f"{name}.jsonl", desc=desc,
                                max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, shard=self.shard,
                                **env_kwargs)

    def _probes(self, policy, name: str) -> list[dict[str, Any]]:
        from ..benchmark.protocols import load_crisis_probes

        return evaluate_crisis(policy, self.args.therapist_prompt, self.out / f"{name}.jsonl",
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                               probes=load_crisis_probes(per_type=self.args.crisis_per_type), checker=self.checker,
                               shard=self.shard)

    def results(self) -> dict[str, Any]:
        """The ``eval`` block of results.json: :func:`compare`'s keys (unchanged) plus heldout, diversity and safety
        (and ``unguarded``: the same without the guardrail, when it is on)."""
        a = self.args
        block = {**compare(self.episodes["before"], self.episodes["after"]), "guardrail": self.guarded}
        if self.heldout_on:
            block["heldout"] = {"patient": a.heldout_patient, "reward": a.heldout_reward,
                                **compare(self.heldout["before"], self.heldout["after"])}
        else:
            block["heldout"] = {"skipped": "--heldout_patient none; --heldout_patient rule|embedded|<backend spec> runs "
                                           "one with --heldout_reward (composite)"}
        block["diversity"] = diversity_block(self.episodes)
        block["safety"] = safety_block(self.episodes, self.crisis)
        if self.guarded:
            block["unguarded"] = {**compare(self.unguarded["before"], self.unguarded["after"]),
                                  "guardrail_replies": dict(self.guardrail_replies),
                                  "diversity": diversity_block(self.unguarded),
                                  "safety": safety_block(self.unguarded, self.unguarded_crisis)}
        return block

    @staticmethod
    def metrics(block: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
        """W&B metrics of an ``eval`` block (:meth:`results`): ``eval/before_mean_reward``, ``eval/after_mean_reward``,
        ``eval/delta``, ``eval/<block>/<side>_<name>`` of the other blocks and the same under ``eval/unguarded/``;
        None values left out."""
        out: dict[str, Any] = {f"{prefix}/before_mean_reward": block["before"]["mean_reward"],
                               f"{prefix}/after_mean_reward": block["after"]["mean_reward"],
                               f"{prefix}/delta": block["delta"]["mean"]}
        if "mean_reward" in block.get("heldout", {}).get("before", {}):
            h = block["heldout"]
            out.update({f"{prefix}/heldout/before_mean_reward": h["before"]["mean_reward"],
                        f"{prefix}/heldout/after_mean_reward": h["after"]["mean_reward"],
                        f"{prefix}/heldout/delta": h["delta"]["mean"]})
        for name in ("diversity", "safety"):
            for side in SIDES:
                out.update({f"{prefix}/{name}/{side}_{k}": v for k, v in block[name][side].items()})
            for k, v in block[name]["delta"].items():
                out[f"{prefix}/{name}/delta_{k}"] = v["mean"] if isinstance(v, dict) else v
        if "unguarded" in block:
            out.update(EvalPanel.metrics(block["unguarded"], f"{prefix}/unguarded"))
            out.update({f"{prefix}/unguarded/{side}_guardrail_replies": n
                        for side, n in block["unguarded"]["guardrail_replies"].items()})
        return {k: v for k, v in out.items() if v is not None}

    @staticmethod
    def lines(block: dict[str, Any], reward: bool = True) -> list[str]:
        """One console line per block: the training reward (unless ``reward`` is False), held-out panel, diversity,
        safety, and (guardrail on) the policy without the guardrail."""
        out = [f"eval: mean episode reward {_reward_line(block)}"] if reward else []
        h = block["heldout"]
        out += [f"held-out panel: skipped ({h['skipped']})" if "skipped" in h else
                f"held-out panel ({h['patient']} patient, {h['reward']} reward): mean episode reward {_reward_line(h)}"]
        out += _diversity_safety_lines(block)
        if "unguarded" in block:
            u = block["unguarded"]
            n = u["guardrail_replies"]
            out.append(f"without the crisis guardrail (it replied {n.get('before', 0)} / {n.get('after', 0)} times "
                       f"before / after): mean episode reward {_reward_line(u)}")
            out += ["  " + line for line in _diversity_safety_lines(u)]
        return out


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _delta(d: dict[str, Any] | None) -> str:
    return "n/a" if d is None else f"{d['mean']:+.3f} (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})"


def _reward_line(block: dict[str, Any]) -> str:
    return (f"{block['before']['mean_reward']:.3f} -> {block['after']['mean_reward']:.3f}; delta {_delta(block['delta'])} "
            f"over {block['episodes']} episodes")


def _diversity_safety_lines(block: dict[str, Any]) -> list[str]:
    d, s = block["diversity"], block["safety"]
    return [f"diversity: distinct-2 {_num(d['before']['distinct2'])} -> {_num(d['after']['distinct2'])}; repeated "
            f"openings {_num(d['before']['repeated_openings'])} -> {_num(d['after']['repeated_openings'])}",
            f"safety: safety ok {_num(s['before']['safety_ok'])} -> {_num(s['after']['safety_ok'])} (delta "
            f"{_delta(s['delta']['safety_ok'])}); crisis probes passed {_num(s['before']['crisis_pass'])} -> "
            f"{_num(s['after']['crisis_pass'])} of {s['crisis_probes']} (delta {_delta(s['delta']['crisis_pass'])})"]
