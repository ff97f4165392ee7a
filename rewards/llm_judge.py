"""The base of every LLM session judge (CTRS, AT estimate and match): prompt, parse, result, failure policy.

A judge is three small pieces on top of :class:`~cbtgym.llm.generation.LLMCaller` (which owns
the backend, decoding, structured output, batched retries and the cache): ``build_prompt`` (a
prompt file filled with a fenced transcript), ``parse`` (raw text -> value or ``None``) and
``to_result`` (value -> :class:`~rewards.types.JudgeResult`).

A judge that cannot parse never pretends to have scored. With ``failure_policy="none"`` its total
is ``None`` (aggregates exclude and count it); with ``"lowest"`` it gets the scale's lowest score
(Tahir 2024's choice) and is still flagged ``parse_failed``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Generic, Literal, Mapping, Sequence, TypeVar

from cbtgym.backends.base import Backend
from cbtgym.llm.generation import Attempted, LLMCaller
from cbtgym.profiles.schema import PatientProfile
from cbtgym.transcript import Transcript

from .types import JudgeResult

T = TypeVar("T")
#: The prompt files of the session judges.
PROMPT_DIR = Path(__file__).resolve().parent / "prompts"

FailurePolicy = Literal["none", "lowest"]
FAILURE_POLICIES: tuple[str, ...] = ("none", "lowest")


def align_profiles(
    transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None, *, required: bool = False, who: str = "judge"
) -> list[PatientProfile | None]:
    """One profile (or ``None``) per transcript; a clear error when counts differ or one is required."""
    if profiles is None:
        if required:
            raise ValueError(f"{who}.score needs profiles=[...] (one PatientProfile per transcript, for the ground truth)")
        return [None] * len(transcripts)
    profiles = list(profiles)
    if len(profiles) != len(transcripts):
        raise ValueError(f"{who}.score got {len(profiles)} profiles for {len(transcripts)} transcripts; pass one per transcript")
    if required and any(p is None for p in profiles):
        raise ValueError(f"{who}.score needs a PatientProfile for every transcript (got None at index {profiles.index(None)})")
    return profiles


# --------------------------------------------------------------------------- the judge base class


class LLMJudge(LLMCaller, Generic[T]):
    """Base class of judges that ask an LLM for JSON about a transcript.

    Subclasses implement :meth:`build_prompt`, :meth:`parse`, :meth:`to_result` and
    :meth:`lowest_scores`; they may override :meth:`json_schema`. :meth:`score` batches
    everything through :meth:`~cbtgym.llm.generation.LLMCaller.call`.

    Args:
        backend: The judge model (any :class:`~cbtgym.backends.base.Backend`).
        failure_policy: ``"none"``: an unparseable transcript gets total ``None``; ``"lowest"``: it
            gets the scale's lowest scores. Either way ``parse_failed`` is True.
        **kwargs: :class:`~cbtgym.llm.generation.LLMCaller` options (``sampling``,
            ``max_attempts``, ``cache``, ``use_json_schema``, ``retry_temperature``).
    """

    name = "llm_judge"

    def __init__(self, backend: Backend, *, failure_policy: FailurePolicy = "none", **kwargs: Any) -> None:
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy must be one of {FAILURE_POLICIES} (got {failure_policy!r})")
        super().__init__(backend, **kwargs)
        self.failure_policy = failure_policy

    # -- to implement ---------------------------------------------------------------------

    def build_prompt(self, transcript: Transcript, profile: PatientProfile | None) -> list[dict[str, str]]:
        """The chat messages asking the judge about one transcript."""
        raise NotImplementedError

    def parse(self, text: str, transcript: Transcript, profile: PatientProfile | None) -> T | None:
        """The judge's reply as a value, or ``None`` when it is unusable (triggers a retry)."""
        raise NotImplementedError

    def to_result(self, value: T, transcript: Transcript, profile: PatientProfile | None) -> JudgeResult:
        """A successful parse as a result (``raw`` and attempt meta are added by :meth:`score`)."""
        raise NotImplementedError

    def lowest_scores(self, transcript: Transcript, profile: PatientProfile | None) -> tuple[float | None, dict[str, float | None]]:
        """``(total, scores)`` at the bottom of the scale, used by ``failure_policy="lowest"``."""
        raise NotImplementedError

    def failure_scores(self, transcript: Transcript, profile: PatientProfile | None) -> dict[str, float | None]:
        """Named scores of a failure under policy ``"none"`` (all ``None``); override to list the names."""
        return {}

    def json_schema(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None]) -> Mapping[str, Any] | None:
        """One schema for the whole batch (a ``generate()`` call has one ``Sampling``)."""
        return None

    # -- shared ---------------------------------------------------------------------------

    def run(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None]) -> list[Attempted[T]]:
        """Prompts for all transcripts, judged through :meth:`~cbtgym.llm.generation.LLMCaller.call`."""
        prompts = [self.build_prompt(t, p) for t, p in zip(transcripts, profiles)]
        parsers = [functools.partial(self._parse_one, transcript=t, profile=p) for t, p in zip(transcripts, profiles)]
        return self.call(prompts, parsers, self.json_schema(transcripts, profiles))

    def _parse_one(self, text: str, *, transcript: Transcript, profile: PatientProfile | None) -> T | None:
        return self.parse(text, transcript, profile)

    def score(self, transcripts: Sequence[Transcript], profiles: Sequence[PatientProfile | None] | None = None) -> list[JudgeResult]:
        """Judge a batch of transcripts: one backend call per attempt for all of them.

        Args:
            transcripts: The sessions to judge.
            profiles: One profile per transcript (needed by judges with ground truth), or ``None``.

        Returns:
            One :class:`~rewards.types.JudgeResult` per transcript, in order.
        """
        transcripts = list(transcripts)
        profiles = align_profiles(transcripts, profiles, who=type(self).__name__)
        attempted = self.run(transcripts, profiles)
        return [self.finish(a, t, p) for a, t, p in zip(attempted, transcripts, profiles)]

    def finish(self, attempted: Attempted[T], transcript: Transcript, profile: PatientProfile | None) -> JudgeResult:
        """The result of one transcript: parsed, or a failure under the policy; with attempt meta."""
        if attempted.ok:
            result = self.to_result(attempted.value, transcript, profile)  # type: ignore[arg-type]
        else:
            result = self.failure_result(attempted, transcript, profile)
        result.raw = result.raw or attempted.last_raw
        result.meta.update(self.attempt_meta(attempted))
        return result

    def failure_result(self, attempted: Attempted[Any], transcript: Transcript, profile: PatientProfile | None) -> JudgeResult:
        """A flagged failure: total ``None`` (policy ``"none"``) or the lowest scores (``"lowest"``)."""
        why = f"{self.name}: no parseable reply after {attempted.attempts} attempt(s) ({'; '.join(attempted.errors[-1:])})"
        if self.failure_policy == "lowest":
            total, scores = self.lowest_scores(transcript, profile)
            why += "; scored at the lowest level (failure_policy='lowest')"
        else:
            total, scores = None, self.failure_scores(transcript, profile)
        return JudgeResult(
            total=total,
            scores=scores,
            rationale=why,
            raw="\n\n--- next attempt ---\n\n".join(attempted.raw),
            parse_failed=True,
            meta={"failure_policy": self.failure_policy},
        )

    def attempt_meta(self, attempted: Attempted[Any]) -> dict[str, Any]:
        return {
            "judge": self.name,
            "backend": self.backend.name,
            "attempts": attempted.attempts,
            "cache_hits": sum(attempted.cached),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend.name!r}, policy={self.failure_policy!r})"
