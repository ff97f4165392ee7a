"""Write new patient profiles with an LLM, as the LLM4CBT paper built its personas.

Given a persona (age, gender, occupation, optionally a name) and a presenting problem, the model
writes the rest of the profile: a description of the problem, a situation, reactions, automatic
thoughts, a core belief and emotions. The prompt is ``prompts/generate_profile.txt``; the reply
must be a JSON object (``Sampling.json_schema`` is set, so structured-output engines enforce it;
others get the same request in words and a tolerant parser).

All N requests go to the backend in one ``generate()`` call; replies that do not parse or do not
validate are retried (again one call for all of them) up to ``max_attempts`` times, then
reported in :attr:`GenerationReport.failures` with every raw text. Nothing is silently dropped.

Example::

    from cbtgym.profiles.generator import ProfileGenerator, ProfileRequest
    from cbtgym.profiles.schema import Persona

    gen = ProfileGenerator(backend)
    report = gen.generate([ProfileRequest(Persona(40, "female", "artist"), "GAD")])
    report.profiles, report.failures
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..backends.base import Backend, Sampling
from ..llm import LLMCaller, extract_json, render_prompt
from .schema import ATTITUDES, PatientProfile, Persona, ProfileError

PROMPT_FILE = Path(__file__).resolve().parent / "prompts" / "generate_profile.txt"
GENERATED_SOURCE = "generated"

#: What the model must return; passed as ``Sampling.json_schema``.
PROFILE_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "disorder_description": {"type": "string", "minLength": 1},
        "situation": {"type": "string", "minLength": 1},
        "reactions": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 3},
        "automatic_thoughts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 2},
        "core_belief": {"type": "string", "minLength": 1},
        "emotions": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 3},
    },
    "required": ["disorder_description", "situation", "reactions", "automatic_thoughts", "core_belief", "emotions"],
    "additionalProperties": False,
}
GENERATED_FIELDS: tuple[str, ...] = tuple(PROFILE_JSON_SCHEMA["required"])

# Singular/alternative keys small models use for the same thing; mapped before validation.
_KEY_ALIASES = {
    "description": "disorder_description",
    "reaction": "reactions",
    "automatic_thought": "automatic_thoughts",
    "thoughts": "automatic_thoughts",
    "belief": "core_belief",
    "feelings": "emotions",
}
# A value like "<one sentence ...>" or a copy of the prompt's own example is not the model's writing.
_PLACEHOLDER = re.compile(r"^\s*<.*>\s*$", re.DOTALL)
_PROMPT_EXAMPLES = ("if i make one mistake, my boss will see i'm a fraud.",)


@dataclass(frozen=True)
class ProfileRequest:
    """What to generate: who the patient is and what they struggle with.

    Attributes:
        persona: Age, gender, occupation and optionally a first name.
        disorder: The presenting problem, e.g. ``"GAD"``, ``"panic disorder"``.
        attitude: ``"active"`` or ``"passive"``; set on the profile, not generated.
        id: The new profile's id; default ``gen-<disorder>-<NN>`` by position in the batch.
    """

    persona: Persona
    disorder: str
    attitude: str = "active"
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.persona, Persona):
            raise TypeError(f"ProfileRequest.persona must be a Persona (got {type(self.persona).__name__})")
        if not self.disorder or not self.disorder.strip():
            raise ValueError("ProfileRequest.disorder must name the presenting problem, e.g. 'GAD'")
        if not 10 <= int(self.persona.age) <= 110:
            raise ValueError(f"ProfileRequest.persona.age must be between 10 and 110 (got {self.persona.age})")
        if self.attitude not in ATTITUDES:
            raise ValueError(f"ProfileRequest.attitude must be one of {ATTITUDES} (got {self.attitude!r})")


@dataclass
class GenerationFailure:
    """A request whose every attempt failed; kept with the raw texts so it can be inspected.

    Attributes:
        request: The request that failed.
        profile_id: The id the profile would have had.
        raw: The model's text of each attempt, in order.
        errors: Why each attempt was rejected (no JSON object, or the schema's error).
    """

    request: ProfileRequest
    profile_id: str
    raw: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.raw)

    def __str__(self) -> str:
        last = self.errors[-1] if self.errors else "no attempt"
        return f"{self.profile_id}: {self.attempts} attempt(s) failed; last error: {last}"


@dataclass
class GenerationReport:
    """The outcome of one :meth:`ProfileGenerator.generate` call.

    Attributes:
        profiles: The valid profiles, in request order (failed requests left out).
        failures: One entry per request that never produced a valid profile.
        attempts: For each request, in order, how many attempts it took (or used up).
    """

    profiles: list[PatientProfile]
    failures: list[GenerationFailure]
    attempts: list[int]

    @property
    def ok(self) -> bool:
        return not self.failures


def render_request(request: ProfileRequest, prompt_file: str | Path = PROMPT_FILE) -> str:
    """The filled generation prompt for one request."""
    p = request.persona
    return render_prompt(
        prompt_file,
        name=p.name or "(not given; do not invent one)",
        age=p.age,
        gender=p.gender,
        occupation=p.occupation,
        disorder=request.disorder.strip(),
    )


def default_id(request: ProfileRequest, index: int) -> str:
    """``gen-<disorder slug>-<NN>`` (1-based position in the batch) unless the request sets an id."""
    if request.id:
        return request.id
    slug = re.sub(r"[^a-z0-9]+", "-", request.disorder.lower()).strip("-") or "profile"
    return f"gen-{slug}-{index + 1:02d}"


def parse_generated(text: str, request: ProfileRequest, profile_id: str) -> PatientProfile:
    """Turn one model reply into a validated profile.

    Args:
        text: The model's reply (code fences and prose around the JSON object are tolerated).
        request: The request it answers (persona, disorder and attitude come from here).
        profile_id: The id to give the profile.

    Returns:
        The validated profile (``source="generated"``).

    Raises:
        ProfileError: No JSON object in the reply, a field is missing or has the wrong type, or a
            value is a placeholder copied from the prompt; the message names the id and the field.
    """
    data = extract_json(text)
    if data is None:
        raise ProfileError("the reply holds no JSON object", source=GENERATED_SOURCE, profile_id=profile_id)
    fields = {_KEY_ALIASES.get(k, k): v for k, v in data.items()}
    missing = [k for k in GENERATED_FIELDS if k not in fields]
    if missing:
        raise ProfileError(
            f"missing from the reply (got keys {sorted(data)})", source=GENERATED_SOURCE, profile_id=profile_id, field=missing[0]
        )
    for key in GENERATED_FIELDS:
        values = fields[key] if isinstance(fields[key], list) else [fields[key]]
        for v in values:
            if isinstance(v, str) and (_PLACEHOLDER.match(v) or v.strip().lower() in _PROMPT_EXAMPLES):
                raise ProfileError(
                    f"is a placeholder or an example copied from the prompt ({v!r})",
                    source=GENERATED_SOURCE, profile_id=profile_id, field=key,
                )
    p = request.persona
    record = {
        "id": profile_id,
        "persona": {"age": p.age, "gender": p.gender, "occupation": p.occupation, "name": p.name},
        "disorder": request.disorder.strip(),
        "attitude": request.attitude,
        "source": GENERATED_SOURCE,
        **{k: fields[k] for k in GENERATED_FIELDS},
    }
    return PatientProfile.from_dict(record, source=GENERATED_SOURCE)


class ProfileGenerator(LLMCaller):
    """Generates profiles for a batch of requests with one backend.

    Args:
        backend: Any :class:`~cbtgym.backends.base.Backend`.
        sampling: Decoding of the first attempt; default: temperature 0.8, seed 0, 384 new tokens.
            The JSON schema is added when ``sampling`` has none.
        max_attempts: Attempts per request (>= 1) before it is reported as a failure.
        retry_temperature: Temperature of retries when ``sampling`` is greedy (greedy would
            only repeat the rejected text).
        prompt_file: The prompt template (``$name``, ``$age``, ``$gender``, ``$occupation``, ``$disorder``).
    """

    def __init__(
        self,
        backend: Backend,
        sampling: Sampling | None = None,
        max_attempts: int = 3,
        retry_temperature: float = 0.8,
        prompt_file: str | Path = PROMPT_FILE,
    ) -> None:
        sampling = sampling or Sampling(max_new_tokens=384, temperature=0.8, seed=0)
        if sampling.json_schema is None:
            sampling = sampling.with_(json_schema=PROFILE_JSON_SCHEMA)
        # No cache: generation wants fresh samples, and a failed reply must not be replayed.
        super().__init__(backend, sampling=sampling, max_attempts=max_attempts, cache=None,
                         retry_temperature=retry_temperature)
        self.prompt_file = Path(prompt_file)

    def build_prompt(self, request: ProfileRequest) -> list[dict[str, str]]:
        """The chat conversation sent for one request."""
        return [{"role": "user", "content": render_request(request, self.prompt_file)}]

    def generate(self, requests: Sequence[ProfileRequest]) -> GenerationReport:
        """Generate one profile per request (one backend call per attempt round).

        Args:
            requests: What to generate; ids (given or default) must be unique.

        Returns:
            The valid profiles and the failures, each failure with the raw text of every attempt.
        """
        requests = list(requests)
        ids = [default_id(r, i) for i, r in enumerate(requests)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"ProfileRequest ids must be unique; repeated: {dupes}")
        parsers = [functools.partial(parse_generated, request=r, profile_id=pid) for r, pid in zip(requests, ids)]
        attempted = self.call([self.build_prompt(r) for r in requests], parsers)
        profiles, failures = [], []
        for request, pid, result in zip(requests, ids, attempted):
            if result.ok:
                profiles.append(result.value)
            else:
                failures.append(GenerationFailure(request, pid, list(result.raw), list(result.errors)))
        return GenerationReport(profiles, failures, [a.attempts for a in attempted])


def requests_from_profiles(profiles: Sequence[PatientProfile], suffix: str = "gen") -> list[ProfileRequest]:
    """Requests that reuse existing profiles' personas, disorders and attitudes (ids ``<id>-<suffix>``).

    Useful to regenerate, e.g., the LLM4CBT personas with another model.
    """
    return [ProfileRequest(p.persona, p.disorder, p.attitude, id=f"{p.id}-{suffix}") for p in profiles]
