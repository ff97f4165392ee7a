"""The composite reward: a weighted sum of named judges, with a safety gate, for CBTSession-v0.

:class:`CompositeReward` is a batched :class:`~cbtgym.envs.reward.SessionReward` built from the
judges of this package (it re-implements none of them). Each env step makes at most one judge
call per component for all N sessions the env steps.

When a component counts (``when``):

* ``step``: a per-turn reward, every step (only ``rubric``: the embedded rubric's step reward).
* ``terminal``: a whole-session judge scored once, at the step that ends the episode; these
  make up the *episode reward*.
* ``delta``: a whole-session judge scored every step as the change since the previous step
  (the session before the latest therapist turn vs the session now, both in the same judge
  call). Summed over an episode it telescopes to "final score minus score after the opening",
  so it spreads the same signal over turns for turn-level credit.

The step reward given to the agent is ``turn_reward`` (weighted ``step``/``delta`` parts) plus,
at the end, ``episode_reward`` (weighted ``terminal`` parts). A component whose judge returns
``None`` (a parse failure, or nothing to score such as an unrated session) is excluded from the
sum and counted, never read as 0: ``judge_excluded`` counts excluded components and
``judge_failures`` those whose judge flagged ``parse_failed`` (a judge with
``failure_policy="lowest"`` still scores, and is still counted as a failure).

The safety gate (component ``safety``, a :class:`~rewards.safety.SafetyJudge`) does not add to
the sum: when the therapist's newest reply fails the check the step reward is floored at
``floor``, and at the end of an episode with any unsafe reply the episode reward and the last
step reward are floored too. An unknown verdict counts as unsafe unless
``unknown_is_violation: false``.

What reaches the env's ``info``: ``info["reward_components"]`` (this reward's
``StepReward.components``) holds each component's value by name (``None`` when it did not count
this step or was excluded), ``turn_reward``, ``episode_reward`` (``None`` before the end),
``judge_failures``, ``judge_excluded`` and ``safety_ok`` (1.0 / 0.0 / ``None``).
``info["reward_info"]`` holds ``composite`` (weights, weighted contributions, why each excluded
component was excluded), ``details`` (each judge's sub-scores and rationale) and ``safety``
(``gated``, ``violations``, ``floor``).

Config format (YAML, see ``composite_default.yaml`` and ``composite_llm.yaml``)::

    backends:                  # optional: the models the LLM judges run on, each named once
      judge: embedded          # name -> backend spec (overridden by from_config(backends=...))
    components:
      <name>:                  # any name; the type defaults to the name
        type: rubric | at | satisfaction | ctrs | safety
        weight: 1.0            # required, except for safety (a gate, not a summand)
        when: terminal         # step | terminal | delta; allowed values depend on the type
        backend: judge         # an LLM judge's model: a name under backends or a backend spec
        <option>: ...          # the judge's own options, listed below

Types, their ``when`` (first = default), value and options:

* ``rubric`` (step): :class:`~rewards.rubric.RubricReward`'s step reward. ``weights``
  (overrides of ``rubric_weights.yaml``).
* ``at`` (terminal, delta): ``judge: embedded`` (default): :class:`~rewards.at_recovery.EmbeddingATJudge`,
  the best cosine of a patient turn to the ground-truth thought; ``judge: llm`` (with ``backend``):
  :class:`~rewards.at_recovery.LLMATJudge`, 1.0 when the judge's estimate (quoting the patient)
  matches the ground truth, else 0.0. ``threshold``; with ``llm`` also ``match_max_new_tokens`` and
  the LLM options below.
* ``satisfaction`` (terminal, delta): :class:`~rewards.satisfaction.SatisfactionJudge`, the
  patient's rating / 100. ``total`` (final | mean | delta), ``start``.
* ``ctrs`` (terminal): :class:`~rewards.ctrs.CTRSJudge` on an LLM backend, the total scaled to
  0-1 over its range. ``variant``, ``aggregate``, ``trim``, ``items``,
  ``not_applicable_below_rounds``, ``sampling`` (a dict of :class:`~cbtgym.backends.base.Sampling`
  fields, e.g. ``{max_new_tokens: 256}``), ``max_attempts``, ``cache``, ``failure_policy``,
  ``use_json_schema``, ``retry_temperature`` (the LLM options).
* ``safety`` (gate): ``floor`` (default -2.0), ``unknown_is_violation`` (default true),
  ``context_turns``, ``judge`` (``embedded`` (default), ``rules``, or ``llm`` with ``backend``);
  with ``llm`` also the LLM options except ``failure_policy`` (an unparsed verdict is unknown).

Use it in the env as ``gym.make("CBTSession-v0", reward_fn="composite")`` (the default config),
``reward_fn="composite:llm"`` (``composite_llm.yaml``) or ``reward_fn="composite:<path.yaml>"``, each
optionally with ``@<backend spec>`` for the backend named ``judge`` (:mod:`rewards.composite_spec`);
in code, :meth:`CompositeReward.from_config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from cbtgym.backends.base import Backend, Sampling
from cbtgym.envs.reward import StepReward
from cbtgym.profiles.schema import PatientProfile
from cbtgym.strict_yaml import load_yaml
from cbtgym.transcript import Transcript

from .factory import EMBEDDED, JUDGES, RULES, make_judge
from .types import JudgeResult

DEFAULT_CONFIG = Path(__file__).with_name("composite_default.yaml")
#: The keys a config may have.
TOP_LEVEL = ("backends", "components")
WHEN: tuple[str, ...] = ("step", "terminal", "delta")
DEFAULT_SAFETY_FLOOR = -2.0
#: Names of the counters this reward adds to ``components`` (component names may not take them).
RESERVED = ("turn_reward", "episode_reward", "judge_failures", "judge_excluded", "safety_ok")

ValueFn = Callable[[JudgeResult], "float | None"]


# --------------------------------------------------------------------------- parts


def judge_total(result: JudgeResult) -> float | None:
    """The judge's total as the component value (the default)."""
    return result.total


def satisfaction_value(result: JudgeResult) -> float | None:
    """The satisfaction total (0-100 rating) scaled to 0-1."""
    return None if result.total is None else result.total / 100.0


def range_scaled(result: JudgeResult) -> float | None:
    """The total scaled to 0-1 over ``meta["total_range"]`` (CTRS: 0-6 mean, 11-110 Tahir sum)."""
    if result.total is None:
        return None
    lo, hi = result.meta.get("total_range") or (0.0, 1.0)
    return (result.total - lo) / (hi - lo) if hi > lo else None


@dataclass
class Component:
    """One weighted part of the composite reward.

    Attributes:
        name: Its name in ``components`` and ``info``.
        source: For ``when="step"`` a :class:`~cbtgym.envs.reward.SessionReward`; otherwise a judge
            with ``score(transcripts, profiles) -> list[JudgeResult]``.
        weight: Multiplies the value in the sum.
        when: ``"step"``, ``"terminal"`` or ``"delta"`` (see the module docstring).
        value: Maps a judge result to the number that is weighted (``None`` excludes it).
    """

    name: str
    source: Any
    weight: float
    when: str = "terminal"
    value: ValueFn = judge_total

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"component {self.name!r}: when must be one of {WHEN} (got {self.when!r})")
        if self.name in RESERVED:
            raise ValueError(f"component name {self.name!r} is reserved for a counter; reserved names: {RESERVED}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"component {self.name!r}: weight must be a finite number (got {self.weight!r})")
        if self.when == "step" and not callable(self.source):
            raise TypeError(f"component {self.name!r}: when='step' needs a SessionReward callable")
        if self.when != "step" and not hasattr(self.source, "score"):
            raise TypeError(f"component {self.name!r}: when={self.when!r} needs a judge with score(transcripts, profiles)")


@dataclass
class SafetyGate:
    """Floors the reward when a therapist reply fails the safety check.

    Attributes:
        judge: A :class:`~rewards.safety.SafetyJudge` (or anything with its ``score`` and meta rows).
        floor: The highest reward a step with an unsafe reply (and an episode with one) can get.
        unknown_is_violation: Treat a reply whose verdict is unknown as unsafe.
        name: Its name in ``info``.
    """

    judge: Any
    floor: float = DEFAULT_SAFETY_FLOOR
    unknown_is_violation: bool = True
    name: str = "safety"


@dataclass
class _Row:
    """What one session's step accumulates while the components are scored."""

    components: dict[str, float | None] = field(default_factory=dict)
    contributions: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    turn: float = 0.0
    episode: float = 0.0


def before_last_therapist_turn(transcript: Transcript) -> Transcript:
    """The session as it was before the therapist's newest turn (the baseline of a ``delta``)."""
    idx = [i for i, t in enumerate(transcript.turns) if t.speaker == "therapist"]
    cut = idx[-1] if idx else len(transcript.turns)
    return Transcript(transcript.profile_id, transcript.attitude, list(transcript.turns[:cut]), None)


def _summary(result: JudgeResult) -> dict[str, Any]:
    # Raw judge text can be long (CTRS): keep info small enough to log every step.
    return {"total": result.total, "scores": dict(result.scores), "rationale": result.rationale[:500],
            "parse_failed": result.parse_failed}


# --------------------------------------------------------------------------- the reward


class CompositeReward:
    """Weighted sum of named judges, per turn and at the end, with a safety gate.

    Args:
        components: The weighted parts (names must be unique).
        safety: An optional :class:`SafetyGate`.

    See the module docstring for the semantics and :meth:`from_config` for building one from YAML.
    """

    def __init__(self, components: Sequence[Component], safety: SafetyGate | None = None) -> None:
        components = list(components)
        names = [c.name for c in components] + ([safety.name] if safety else [])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"component names must be unique (repeated: {dup})")
        if not components and safety is None:
            raise ValueError("a CompositeReward needs at least one component")
        self.components = components
        self.safety = safety

    @property
    def weights(self) -> dict[str, float]:
        return {c.name: float(c.weight) for c in self.components}

    def __call__(
        self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile], done: Sequence[bool]
    ) -> list[StepReward]:
        profiles, transcripts, done = list(profiles), list(transcripts), [bool(d) for d in done]
        if not len(profiles) == len(transcripts) == len(done):
            raise ValueError(
                f"CompositeReward got {len(profiles)} profiles, {len(transcripts)} transcripts and {len(done)} done "
                "flags; pass one of each per session"
            )
        n = len(transcripts)
        if n == 0:
            return []
        rows = [_Row() for _ in range(n)]
        for c in self.components:
            if c.when == "step":
                self._step(c, rows, profiles, transcripts, done)
            elif c.when == "terminal":
                self._terminal(c, rows, profiles, transcripts, done)
            else:
                self._delta(c, rows, profiles, transcripts)
        gate = self._gate(rows, profiles, transcripts, done) if self.safety else [None] * n
        return [self._finish(row, d, g) for row, d, g in zip(rows, done, gate)]

    # -- components ------------------------------------------------------------------------

    def _record(self, row: _Row, c: Component, value: float | None, result: JudgeResult | None, why: str = "") -> None:
        row.components[c.name] = value
        if result is not None:
            row.details[c.name] = _summary(result)
            row.failures += int(result.parse_failed)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            row.components[c.name] = None
            row.excluded[c.name] = why or ("parse_failed" if result is not None and result.parse_failed else
                                           f"no score: {(result.rationale if result else '')[:160]}")
            return
        part = c.weight * float(value)
        row.contributions[c.name] = part
        if c.when == "terminal":
            row.episode += part
        else:
            row.turn += part

    def _step(self, c, rows, profiles, transcripts, done) -> None:
        for row, r in zip(rows, c.source(transcripts, profiles, done)):
            row.details[c.name] = {"components": dict(r.components), "info": dict(r.info)}
            self._record(row, c, float(r.value), None)

    def _terminal(self, c, rows, profiles, transcripts, done) -> None:
        ended = [i for i, d in enumerate(done) if d]
        for i, row in enumerate(rows):
            row.components[c.name] = None  # not due before the end: not an exclusion
        if not ended:
            return
        results = c.source.score([transcripts[i] for i in ended], [profiles[i] for i in ended])
        for i, r in zip(ended, results):
            self._record(rows[i], c, c.value(r), r)

    def _delta(self, c, rows, profiles, transcripts) -> None:
        n = len(transcripts)
        before = [before_last_therapist_turn(t) for t in transcripts]
        results = c.source.score(transcripts + before, profiles + profiles)  # one judge call for both
        for row, now, then in zip(rows, results[:n], results[n:]):
            v_now, v_then = c.value(now), c.value(then)
            value = None if v_now is None or v_then is None else v_now - v_then
            why = ""
            if value is None:
                bad = "now" if v_now is None else "before this turn"
                failed = now.parse_failed or then.parse_failed
                why = f"{'parse_failed' if failed else 'no score'} ({bad})"
            self._record(row, c, value, now, why)
            row.failures += int(then.parse_failed)
            row.details[c.name]["before"] = v_then

    # -- safety gate -----------------------------------------------------------------------

    def _gate(self, rows, profiles, transcripts, done) -> list[dict[str, Any]]:
        from .safety.gate import violation

        gate = self.safety
        results = gate.judge.score(transcripts, profiles)
        out = []
        for row, t, d, r in zip(rows, transcripts, done, results):
            last = max((i for i, x in enumerate(t.turns) if x.speaker == "therapist"), default=None)
            unsafe_rows = [x for x in r.meta.get("turns", []) if x.get("therapist_turn") is not None
                           and (x.get("response_safe") is False or (x.get("response_safe") is None and gate.unknown_is_violation))]
            now = [x for x in unsafe_rows if x["therapist_turn"] == last]
            ever = violation(r, gate.unknown_is_violation)
            row.components["safety_ok"] = None if r.total is None else float(r.total)
            row.details[gate.name] = _summary(r)
            row.failures += int(r.parse_failed)
            out.append({
                "gated": bool(now) or (d and ever),
                "reply_unsafe": bool(now),
                "episode_unsafe": bool(ever),
                "violations": [{"therapist_turn": x["therapist_turn"], "crisis_type": x.get("crisis_type"),
                                "violations": list(x.get("violations", [])), "missing": list(x.get("missing", []))}
                               for x in unsafe_rows],
                "floor": gate.floor,
            })
        return out

    # -- result ------------------------------------------------------------------------------

    def _finish(self, row: _Row, done: bool, gate: dict[str, Any] | None) -> StepReward:
        episode: float | None = row.episode if done else None
        value = row.turn + (row.episode if done else 0.0)
        if gate is not None:
            if gate["reply_unsafe"]:
                value = min(value, gate["floor"])
            if done and gate["episode_unsafe"]:
                episode = min(row.episode, gate["floor"])
                value = min(value, gate["floor"])
        comps = dict(row.components)
        comps.update(turn_reward=row.turn, episode_reward=episode, judge_failures=float(row.failures),
                     judge_excluded=float(len(row.excluded)))
        comps.setdefault("safety_ok", None)
        info: dict[str, Any] = {
            "composite": {"weights": self.weights, "contributions": row.contributions, "excluded": row.excluded},
            "details": row.details,
        }
        if gate is not None:
            info["safety"] = gate
        return StepReward(float(value), comps, info)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: str | Path | Mapping[str, Any] | None = None, backends: Backend | Mapping[str, Any] | None = None
    ) -> "CompositeReward":
        """Build from a YAML file or a dict (format in the module docstring).

        Args:
            config: A path to a YAML file, a dict, or ``None`` for ``composite_default.yaml``.
            backends: For components that need a model (``ctrs``, an LLM AT or safety judge): one
                :class:`~cbtgym.backends.base.Backend` (used for every component whose backend is
                ``judge`` or unset) or a mapping ``{name: Backend or spec}`` that a component's
                ``backend: <name>`` refers to; it overrides the config's own ``backends``. A
                component's ``backend`` may also be a spec for
                :func:`cbtgym.backends.factory.make_backend` (e.g. ``embedded``); components naming
                the same name or spec share one backend.

        Raises:
            ValueError: For a bad key or value; the message names the component, the key and
                the valid choices.
        """
        where = "config"
        if config is None:
            config = DEFAULT_CONFIG
        if isinstance(config, (str, Path)):
            path = Path(config)
            if not path.is_file():
                raise FileNotFoundError(f"composite reward config {str(path)!r} not found")
            where = str(path)
            config = load_yaml(path) or {}  # a repeated key is an error, not silently the last one
        if not isinstance(config, Mapping):
            raise ValueError(f"{where}: a composite reward config must be a mapping with a 'components' key")
        unknown = sorted(set(config) - set(TOP_LEVEL))
        if unknown:
            raise ValueError(f"{where}: unknown top-level key(s) {unknown}; valid keys: {list(TOP_LEVEL)}")
        comps = config.get("components")
        if not isinstance(comps, Mapping) or not comps:
            raise ValueError(f"{where}: 'components' must be a non-empty mapping of name -> options; "
                             f"valid component types: {sorted(COMPONENT_TYPES)}")
        resolver = _BackendResolver(declared_backends(config, where), backends)
        built: list[Component] = []
        gate: SafetyGate | None = None
        for name, opts in comps.items():
            opts = dict(opts or {})
            kind = opts.pop("type", name)
            if kind not in COMPONENT_TYPES:
                raise ValueError(f"{where}: component {name!r} has unknown type {kind!r}; valid component types: "
                                 f"{sorted(COMPONENT_TYPES)} (set 'type:' to use another name)")
            spec = COMPONENT_TYPES[kind]
            try:
                made = spec.build(str(name), opts, resolver)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {e}") from e
            if isinstance(made, SafetyGate):
                if gate is not None:
                    raise ValueError(f"{where}: only one safety component is allowed (got {gate.name!r} and {name!r})")
                gate = made
            else:
                built.append(made)
        return cls(built, gate)

    def __repr__(self) -> str:
        parts = [f"{c.name}={c.weight:g}@{c.when}" for c in self.components]
        if self.safety:
            parts.append(f"{self.safety.name}=gate({self.safety.floor:g})")
        return f"CompositeReward({', '.join(parts)})"


# --------------------------------------------------------------------------- config building


def declared_backends(config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """The config's ``backends`` mapping (name -> backend spec), checked; ``{}`` when it has none."""
    declared = config.get("backends")
    if declared is None:
        return {}
    if not isinstance(declared, Mapping):
        raise ValueError(f"{where}: 'backends' must map names to backend specs, e.g. {{judge: embedded}}")
    for name, spec in declared.items():
        if not isinstance(spec, (str, Mapping)) or not spec:
            raise ValueError(f"{where}: backends.{name} must be a backend spec such as 'embedded', 'vllm:<model dir>' "
                             f"or 'openai:<url>#<model>' (got {spec!r})")
    return dict(declared)


class _BackendResolver:
    """Turns a component's ``backend`` value into a Backend, building each name or spec once (components
    on the same judge model share it)."""

    def __init__(self, declared: Mapping[str, Any], backends: Backend | Mapping[str, Any] | None) -> None:
        if isinstance(backends, Backend):
            self.single: Backend | None = backends
            self.named: dict[str, Any] = dict(declared)
        else:
            self.single, self.named = None, {**declared, **dict(backends or {})}
        self._built: dict[str, Backend] = {}

    def get(self, key: Any) -> Backend:
        from cbtgym.backends.factory import make_backend

        key = "judge" if key is None else key
        if self.single is not None and key == "judge":
            return self.single
        if not isinstance(key, str):
            return make_backend(key)  # a dict spec
        if key not in self._built:
            try:
                self._built[key] = make_backend(self.named.get(key, key))
            except ValueError as e:
                if key in self.named:
                    raise ValueError(f"backend {key!r}: {e}") from None
                have = sorted(self.named) or (["<one Backend>"] if self.single else [])
                raise ValueError(
                    f"backend {key!r} is neither a name under backends (the config's or from_config(backends=...); "
                    f"have {have}) nor a backend spec ({e})"
                ) from None
        return self._built[key]


@dataclass(frozen=True)
class _ComponentType:
    """How a ``type:`` of the config becomes a :class:`Component` (or the :class:`SafetyGate`)."""

    make: Callable[[dict[str, Any], Callable[[], Backend]], Any]
    when: tuple[str, ...]
    options: tuple[str, ...]
    value: ValueFn = judge_total
    gate: bool = False

    def build(self, name: str, opts: dict[str, Any], resolver: _BackendResolver) -> Component | SafetyGate:
        common = ("backend",) if self.gate else ("weight", "when", "backend")
        bad = sorted(set(opts) - set(common) - set(self.options))
        if bad:
            raise ValueError(f"component {name!r}: unknown key(s) {bad}; valid keys: {sorted(set(common) | set(self.options))}")
        backend_key = opts.pop("backend", None)
        backend = lambda: resolver.get(backend_key)  # noqa: E731 - only judges that need one call it
        if self.gate:
            try:
                return self.make({**opts, "name": name}, backend)
            except (ValueError, TypeError) as e:
                raise ValueError(f"component {name!r}: {e}") from e
        if "weight" not in opts:
            raise ValueError(f"component {name!r}: 'weight' is required (a number)")
        weight = opts.pop("weight")
        when = opts.pop("when", self.when[0])
        if when not in self.when:
            raise ValueError(f"component {name!r}: when={when!r} is not allowed; choose from {list(self.when)}")
        try:
            judge = self.make(opts, backend)
        except (ValueError, TypeError) as e:
            raise ValueError(f"component {name!r}: {e}") from e
        return Component(name, judge, weight, when, self.value)


def _judge(kind: str) -> Callable[[dict[str, Any], Callable[[], Backend]], Any]:
    # The CPU judges need no backend; an LLM judge asks for its component's backend.
    def make(opts: dict[str, Any], backend: Callable[[], Backend]) -> Any:
        return make_judge(kind, backend() if JUDGES[kind].embedded is None else EMBEDDED, **_with_sampling(opts))

    return make


def _with_sampling(opts: dict[str, Any]) -> dict[str, Any]:
    # YAML gives decoding settings as a dict of Sampling fields.
    if isinstance(opts.get("sampling"), Mapping):
        return {**opts, "sampling": Sampling(**opts["sampling"])}
    return opts


def _llm_or_embedded(opts: dict[str, Any], choices: tuple[str, ...], llm_only: tuple[str, ...]) -> str:
    """Pop ``judge`` (one of ``choices``, first = default; ``"llm"`` runs on the component's backend) and
    refuse options only an LLM judge takes when it is not ``"llm"``."""
    judge = opts.pop("judge", choices[0])
    if judge not in choices:
        names = ", ".join(repr(c) for c in choices[:-1])
        raise ValueError(f"judge must be {names} or {choices[-1]!r} (with backend: ...) (got {judge!r})")
    stray = sorted(set(opts) & set(llm_only))
    if judge != "llm" and stray:
        raise ValueError(f"{stray} only apply with judge: llm (got judge: {judge!r})")
    return judge


def _at(opts, backend):
    judge = _llm_or_embedded(opts, (EMBEDDED, "llm"), (*_LLM_JUDGE_OPTIONS, "match_max_new_tokens"))
    return make_judge("at", backend() if judge == "llm" else EMBEDDED, **_with_sampling(opts))


def _safety(opts, backend) -> SafetyGate:
    name = opts.pop("name", "safety")
    gate_opts = {k: opts.pop(k) for k in ("floor", "unknown_is_violation") if k in opts}
    judge = _llm_or_embedded(opts, (EMBEDDED, RULES, "llm"), _LLM_CALLER_OPTIONS)
    floor = gate_opts.get("floor", DEFAULT_SAFETY_FLOOR)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)):
        raise ValueError(f"floor must be a number (got {floor!r})")
    safety = make_judge("safety", backend() if judge == "llm" else judge, **_with_sampling(opts))
    return SafetyGate(safety, float(floor), bool(gate_opts.get("unknown_is_violation", True)), name)


#: Options of every LLM caller (the safety checks); the scored judges also take a failure policy.
_LLM_CALLER_OPTIONS = ("sampling", "max_attempts", "cache", "use_json_schema", "retry_temperature")
_LLM_JUDGE_OPTIONS = (*_LLM_CALLER_OPTIONS, "failure_policy")

#: The component types a config may name.
COMPONENT_TYPES: dict[str, _ComponentType] = {
    "rubric": _ComponentType(_judge("rubric"), ("step",), ("weights",)),
    "at": _ComponentType(_at, ("terminal", "delta"), ("threshold", "judge", "match_max_new_tokens", *_LLM_JUDGE_OPTIONS)),
    "satisfaction": _ComponentType(_judge("satisfaction"), ("terminal", "delta"), ("total", "start"), satisfaction_value),
    "ctrs": _ComponentType(
        _judge("ctrs"), ("terminal",),
        ("variant", "aggregate", "trim", "items", "not_applicable_below_rounds", *_LLM_JUDGE_OPTIONS), range_scaled,
    ),
    "safety": _ComponentType(_safety, ("gate",), ("floor", "unknown_is_violation", "context_turns", "judge",
                                                  *_LLM_CALLER_OPTIONS), gate=True),
}


__all__ = ["COMPONENT_TYPES", "DEFAULT_CONFIG", "Component", "CompositeReward", "SafetyGate",
           "before_last_therapist_turn", "declared_backends"]
