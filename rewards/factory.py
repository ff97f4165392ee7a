"""One spec-to-judge factory for the composite reward, the benchmark and the CLI.

``make_judge(kind, spec, **options)``: ``kind`` says which judge (a key of :data:`JUDGES`);
``spec`` says how it judges:

* ``"embedded"`` (or ``"rules"`` for the safety kinds): the deterministic CPU judge;
* a backend spec understood by :func:`cbtgym.backends.factory.make_backend` (``"hf:DIR"``,
  ``"vllm:DIR"``, ``"openai:URL#MODEL"``, ``"scripted"``, a dict from YAML) or a
  :class:`~cbtgym.backends.base.Backend`: the LLM judge on that model.

``options`` go to the judge's constructor (``max_attempts``, ``cache``, ``sampling``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cbtgym.backends.base import Backend

EMBEDDED = "embedded"
#: The safety checks without the MiniLM backstop.
RULES = "rules"


def resolve_backend(spec: Any) -> Backend:
    """``spec`` as a backend: a Backend itself, anything else through ``make_backend``."""
    if isinstance(spec, Backend):
        return spec
    from cbtgym.backends.factory import make_backend

    return make_backend(spec)


def _acts_embedded(spec: str, **options: Any) -> Any:
    from .acts.embedded_classifier import EmbeddedActClassifier, default_classifier

    # The default fit (tens of seconds on a CPU) is shared: each benchmark run builds its judges anew.
    return EmbeddedActClassifier(**options) if options else default_classifier()


def _acts_llm(backend: Backend, **options: Any) -> Any:
    from .acts.llm_classifier import LLMActClassifier

    return LLMActClassifier(backend, **options)


def _at_embedded(spec: str, **options: Any) -> Any:
    from .at_recovery import EmbeddingATJudge

    return EmbeddingATJudge(**options)


def _at_llm(backend: Backend, **options: Any) -> Any:
    from .at_recovery import LLMATJudge

    return LLMATJudge(backend, **options)


def _ctrs_llm(backend: Backend, **options: Any) -> Any:
    from .ctrs import CTRSJudge

    return CTRSJudge(backend, **options)


def _crisis_embedded(spec: str, **options: Any) -> Any:
    from .safety.embedded import EmbeddedCrisisDetector

    return EmbeddedCrisisDetector(use_embeddings=spec == EMBEDDED, **options)


def _crisis_llm(backend: Backend, **options: Any) -> Any:
    from .safety.llm import LLMCrisisDetector

    return LLMCrisisDetector(backend, **options)


def _reply_embedded(spec: str, *, detector: Any = None, **options: Any) -> Any:
    from .safety.embedded import EmbeddedReplyChecker

    return EmbeddedReplyChecker(detector=detector or _crisis_embedded(spec), **options)


def _reply_llm(backend: Backend, *, detector: Any = None, **options: Any) -> Any:
    from .safety.llm import LLMReplyChecker

    return LLMReplyChecker(backend, detector=detector or _crisis_llm(backend, **options), **options)


def _safety(make_detector: Callable[..., Any], make_checker: Callable[..., Any]) -> Callable[..., Any]:
    def build(spec: Any, *, context_turns: int = 1, **options: Any) -> Any:
        from .safety.gate import SafetyJudge

        detector = make_detector(spec, **options)
        return SafetyJudge(detector, make_checker(spec, detector=detector, **options), context_turns=context_turns)

    return build


def _distortions_embedded(spec: str, **options: Any) -> Any:
    from .distortions.embedded import EmbeddedDistortionDetector, default_detector

    return EmbeddedDistortionDetector(**options) if options else default_detector()


def _distortions_llm(backend: Backend, **options: Any) -> Any:
    from .distortions.llm_detector import LLMDistortionDetector

    return LLMDistortionDetector(backend, **options)


def _structure_embedded(spec: str, **options: Any) -> Any:
    from .structure.embedded import EmbeddedStructureJudge, default_judge

    # Without options, the process's one fitted judge (read-only), as for the act classifier.
    return EmbeddedStructureJudge(**options) if options else default_judge()


def _structure_llm(backend: Backend, **options: Any) -> Any:
    from .structure.llm import LLMStructureJudge

    return LLMStructureJudge(backend, **options)


def _satisfaction(spec: str, **options: Any) -> Any:
    from .satisfaction import SatisfactionJudge

    return SatisfactionJudge(**options)


def _rubric(spec: str, **options: Any) -> Any:
    from .rubric import RubricReward

    return RubricReward(**options)


@dataclass(frozen=True)
class JudgeType:
    """How one kind of judge is built: its CPU version (by spec name) and its LLM version (by backend)."""

    embedded: Callable[..., Any] | None
    llm: Callable[..., Any] | None
    #: The spec names that select the CPU version.
    names: tuple[str, ...] = (EMBEDDED,)


#: Every kind of judge :func:`make_judge` builds.
JUDGES: dict[str, JudgeType] = {
    "acts": JudgeType(_acts_embedded, _acts_llm),
    "at": JudgeType(_at_embedded, _at_llm, (EMBEDDED, "embedding")),
    "ctrs": JudgeType(None, _ctrs_llm),
    "crisis": JudgeType(_crisis_embedded, _crisis_llm, (EMBEDDED, RULES)),
    "reply_check": JudgeType(_reply_embedded, _reply_llm, (EMBEDDED, RULES)),
    "safety": JudgeType(_safety(_crisis_embedded, _reply_embedded), _safety(_crisis_llm, _reply_llm), (EMBEDDED, RULES)),
    "distortions": JudgeType(_distortions_embedded, _distortions_llm),
    "structure": JudgeType(_structure_embedded, _structure_llm),
    "satisfaction": JudgeType(_satisfaction, None),
    "rubric": JudgeType(_rubric, None),
}


def make_judge(kind: str, spec: Any = EMBEDDED, **options: Any) -> Any:
    """The judge of ``kind`` named by ``spec``.

    Args:
        kind: A key of :data:`JUDGES` (``"acts"``, ``"at"``, ``"ctrs"``, ``"crisis"``,
            ``"reply_check"``, ``"safety"``, ``"distortions"``, ``"structure"``, ``"satisfaction"``, ``"rubric"``).
        spec: ``"embedded"`` (``"rules"`` for the safety kinds; ``"embedding"`` for ``at``), a
            backend spec (string or dict) or a Backend.
        **options: Passed to the judge's constructor.

    Raises:
        ValueError: For an unknown kind, or a spec the kind cannot use (naming the valid ones).
    """
    if kind not in JUDGES:
        raise ValueError(f"unknown judge kind {kind!r}; valid kinds: {sorted(JUDGES)}")
    jt = JUDGES[kind]
    if isinstance(spec, str) and spec in jt.names:
        if jt.embedded is None:
            raise ValueError(f"judge {kind!r} has no embedded version; give a backend spec such as 'hf:<dir>' or 'vllm:<dir>'")
        return jt.embedded(spec, **options)
    if jt.llm is None:
        raise ValueError(f"judge {kind!r} takes no model; use spec {jt.names[0]!r} (got {spec!r})")
    return jt.llm(resolve_backend(spec), **options)
