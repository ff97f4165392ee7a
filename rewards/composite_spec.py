"""The reward strings that name a composite reward: ``composite[:<config>][@<judge backend spec>]``.

* ``composite``: ``composite_default.yaml`` (embedded judges only);
* ``composite:llm``: ``composite_llm.yaml`` (LLM judges; the names are :data:`ALIASES`);
* ``composite:<path.yaml>``: any config (format in :mod:`rewards.composite`);
* any of these with ``@<backend spec>``: that model for the config's backend named ``judge`` (its
  ``backends: {judge: ...}``), e.g. ``composite:llm@vllm:/models/Llama-3.1-8B-Instruct`` or
  ``composite:llm@openai:http://127.0.0.1:8000/v1#meta-llama/Llama-3.1-70B-Instruct``.

The judge rides in the reward string, so wherever a script passes its ``--reward`` (the training env,
the evaluation env, the resume settings of collected candidates, ``results.json``) the same judge goes
with it. A config path cannot contain ``@`` (the first ``@`` starts the backend spec).

:meth:`CompositeSpec.parse` loads no model: the training scripts check their reward with it before
anything starts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from cbtgym.backends.base import Backend

from cbtgym.strict_yaml import load_yaml

from .composite import DEFAULT_CONFIG, CompositeReward, declared_backends

LLM_CONFIG = Path(__file__).with_name("composite_llm.yaml")
#: Config names that stand for the shipped configs.
ALIASES: dict[str, Path] = {"default": DEFAULT_CONFIG, "llm": LLM_CONFIG}
#: The backend name an ``@<spec>`` overrides.
JUDGE = "judge"
PREFIX = "composite"
FORMS = "'composite', 'composite:llm' or 'composite:<path.yaml>', optionally followed by '@<judge backend spec>'"


def is_composite(spec: object) -> bool:
    """Whether a reward string names a composite reward (well formed or not)."""
    return isinstance(spec, str) and (spec == PREFIX or spec.startswith((PREFIX + ":", PREFIX + "@")))


@dataclass(frozen=True)
class CompositeSpec:
    """A parsed composite reward string.

    Attributes:
        config: The YAML config.
        judge: The backend spec for the config's ``judge`` backend, or ``None`` for the config's own.
    """

    config: Path
    judge: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "CompositeSpec":
        """Parse and check ``spec`` (see the module docstring) without loading any model.

        Raises:
            ValueError: For a malformed string, a judge spec of no backend form, or an ``@<spec>`` on a
                config without a ``judge`` backend.
            FileNotFoundError: When the config file does not exist.
        """
        from cbtgym.backends.factory import ACCEPTED_FORMS, is_spec_string

        if not is_composite(spec):
            raise ValueError(f"{spec!r} is no composite reward; use {FORMS}")
        rest = spec[len(PREFIX):]
        config, at, judge = (rest[1:] if rest.startswith(":") else rest).partition("@")
        if rest.startswith(":") and not config.strip():
            raise ValueError(f"{spec!r} needs a path to a YAML config (or one of {sorted(ALIASES)}) after the colon, "
                             "or use 'composite'")
        path = ALIASES.get(config.strip(), Path(config.strip())) if config.strip() else DEFAULT_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"composite reward config {str(path)!r} not found; give the path of a YAML "
                                    f"file or one of {sorted(ALIASES)}")
        if not at:
            return cls(path)
        judge = judge.strip()
        if not is_spec_string(judge):
            raise ValueError(f"{spec!r}: the judge after '@' must be a backend spec: {ACCEPTED_FORMS}")
        declared = declared_backends(load_yaml(path) or {}, str(path))
        if JUDGE not in declared:
            raise ValueError(f"{spec!r}: {path} has no backend named {JUDGE!r} under 'backends' for '@{judge}' to "
                             f"set (it has {sorted(declared)}); use a config with LLM judges such as 'composite:llm'")
        return cls(path, judge)

    def build(self) -> CompositeReward:
        """The reward, its ``judge`` backend shared with every other reward built from the same spec in this
        process (:func:`shared_backend`)."""
        judge = self.judge or declared_backends(load_yaml(self.config) or {}, str(self.config)).get(JUDGE)
        if isinstance(judge, str):
            judge = shared_backend(judge)
        return CompositeReward.from_config(self.config, backends={JUDGE: judge} if judge else None)


@functools.lru_cache(maxsize=None)
def shared_backend(spec: str) -> Backend:
    """One backend per judge spec and process: a script builds its reward from the same string for each rollout,
    evaluation and training env, and a judge model (HF weights, a vLLM engine) must load once, not per env."""
    from cbtgym.backends.factory import make_backend

    return make_backend(spec)


def make_composite(spec: str) -> CompositeReward:
    """The composite reward a reward string names (:meth:`CompositeSpec.parse`, then build)."""
    return CompositeSpec.parse(spec).build()


__all__ = ["ALIASES", "JUDGE", "LLM_CONFIG", "CompositeSpec", "is_composite", "make_composite", "shared_backend"]
