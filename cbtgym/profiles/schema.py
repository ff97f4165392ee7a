"""Patient profiles: the validated description a simulated patient is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..jsonl import MAX_UTTERANCE_CHARS

ATTITUDES = ("active", "passive")
RISK_FLAGS = (
    "suicidal_ideation",
    "self_harm",
    "harm_to_others",
    "psychosis",
    "mania",
    "abuse",
    "means_request",
)


class ProfileError(ValueError):
    """A profile failed validation; the message names the source, the profile id and the field."""

    def __init__(self, message: str, *, source: str | None = None, profile_id: str | None = None, field: str | None = None):
        where = []
        if source:
            where.append(str(source))
        if profile_id:
            where.append(f"profile '{profile_id}'")
        if field:
            where.append(f"field '{field}'")
        super().__init__(": ".join(where + [message]))
        self.source, self.profile_id, self.field = source, profile_id, field
        self.detail = message  # the bare reason, so a loader can re-raise it with a better location


@dataclass(frozen=True)
class Persona:
    age: int
    gender: str
    occupation: str
    name: str | None = None


@dataclass(frozen=True)
class PatientProfile:
    """Everything a simulated patient knows about itself.

    Attributes:
        id: Unique, stable id (used by the train/test split and by caches).
        persona: Age, gender, occupation (and optionally a first name).
        disorder: Presentation label, e.g. ``"GAD"``, ``"depression"``.
        disorder_description: A few sentences on how the problem shows up.
        situation: The triggering situation, in the patient's words.
        reactions: What the patient does/feels in the situation (one or more).
        automatic_thoughts: Ground-truth automatic thoughts (one or more); judges compare against these.
        core_belief: The belief under the thoughts (``None`` when the source has none, as LLM4CBT's personas).
        distortions: Cognitive distortions the automatic thoughts show (labels of
            ``rewards/distortions/taxonomy.yaml``); empty when unlabelled (LLM4CBT's personas).
        emotions: Feelings the patient reports first (the active path opens with them).
        attitude: ``"active"`` (cooperative, discloses in order) or ``"passive"`` (reluctant).
        risk_flags: Crisis markers from :data:`RISK_FLAGS`; empty for non-crisis profiles.
        background: Optional story / history.
        source: Where the profile came from (``"bank"``, ``"llm4cbt"``, a file path, ``"generated"``).
    """

    id: str
    persona: Persona
    disorder: str
    disorder_description: str
    situation: str
    reactions: tuple[str, ...]
    automatic_thoughts: tuple[str, ...]
    core_belief: str | None = None
    distortions: tuple[str, ...] = ()
    emotions: tuple[str, ...] = ()
    attitude: str = "active"
    risk_flags: tuple[str, ...] = ()
    background: str | None = None
    source: str = "unknown"

    @property
    def is_crisis(self) -> bool:
        return bool(self.risk_flags)

    def with_attitude(self, attitude: str) -> "PatientProfile":
        if attitude not in ATTITUDES:
            raise ProfileError(f"must be one of {ATTITUDES} (got {attitude!r})", profile_id=self.id, field="attitude")
        d = self.to_dict()
        d["attitude"] = attitude
        return PatientProfile.from_dict(d, source=self.source)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("reactions", "automatic_thoughts", "distortions", "emotions", "risk_flags"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> "PatientProfile":
        """Validate a mapping and build a profile; errors name the source, id and field."""
        return _validate(data, source)


def _text(data: Mapping[str, Any], key: str, pid: str | None, src: str | None, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ProfileError("is required and must be a non-empty string", source=src, profile_id=pid, field=key)
        return None
    if not isinstance(value, str):
        raise ProfileError(f"must be a string (got {type(value).__name__})", source=src, profile_id=pid, field=key)
    return _bounded(value.strip(), key, pid, src)


def _bounded(value: str, key: str, pid: str | None, src: str | None) -> str:
    # Profile text goes into every patient prompt and judge call of a session: a pasted document would
    # make each step crawl, so it is refused like an over-long CLI utterance.
    if len(value) > MAX_UTTERANCE_CHARS:
        raise ProfileError(f"is {len(value)} characters; a profile field may have at most {MAX_UTTERANCE_CHARS}",
                           source=src, profile_id=pid, field=key)
    return value


def _texts(data: Mapping[str, Any], key: str, pid: str | None, src: str | None, *, min_items: int) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileError("must be a list of non-empty strings", source=src, profile_id=pid, field=key)
    if len(value) < min_items:
        raise ProfileError(f"needs at least {min_items} item(s)", source=src, profile_id=pid, field=key)
    return tuple(_bounded(v.strip(), key, pid, src) for v in value)


def _validate(data: Mapping[str, Any], src: str | None) -> PatientProfile:
    if not isinstance(data, Mapping):
        raise ProfileError(f"a profile must be a mapping (got {type(data).__name__})", source=src)
    known = set(PatientProfile.__dataclass_fields__)
    pid = data.get("id")
    if not isinstance(pid, str) or not pid.strip():
        raise ProfileError("is required: give every profile a unique string id", source=src, field="id")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"unknown field(s) {unknown}; allowed: {sorted(known)}", source=src, profile_id=pid, field=unknown[0])

    persona = data.get("persona")
    if not isinstance(persona, Mapping):
        raise ProfileError("must be a mapping with age, gender, occupation", source=src, profile_id=pid, field="persona")
    age = _whole_years(persona.get("age"))
    if age is None:
        raise ProfileError(f"must be a whole number of years such as 34 (got {persona.get('age')!r})",
                           source=src, profile_id=pid, field="persona.age")
    if not 10 <= age <= 110:
        raise ProfileError(f"must be between 10 and 110 (got {age})", source=src, profile_id=pid, field="persona.age")
    p = Persona(
        age=age,
        gender=_text(persona, "gender", pid, src) or "",
        occupation=_text(persona, "occupation", pid, src) or "",
        name=_text(persona, "name", pid, src, required=False),
    )
    for k in persona:
        if k not in ("age", "gender", "occupation", "name"):
            raise ProfileError("unknown field; allowed: age, gender, occupation, name", source=src, profile_id=pid, field=f"persona.{k}")

    attitude = data.get("attitude", "active")
    if attitude not in ATTITUDES:
        raise ProfileError(f"must be 'active' or 'passive' (got {attitude!r})", source=src, profile_id=pid, field="attitude")
    flags = _texts(data, "risk_flags", pid, src, min_items=0)
    bad = [f for f in flags if f not in RISK_FLAGS]
    if bad:
        raise ProfileError(f"unknown flag(s) {bad}; allowed: {list(RISK_FLAGS)}", source=src, profile_id=pid, field="risk_flags")

    return PatientProfile(
        id=pid.strip(),
        persona=p,
        disorder=_text(data, "disorder", pid, src) or "",
        disorder_description=_text(data, "disorder_description", pid, src) or "",
        situation=_text(data, "situation", pid, src) or "",
        reactions=_texts(data, "reactions", pid, src, min_items=1),
        automatic_thoughts=_texts(data, "automatic_thoughts", pid, src, min_items=1),
        core_belief=_text(data, "core_belief", pid, src, required=False),
        distortions=_distortions(data, pid, src),
        emotions=_texts(data, "emotions", pid, src, min_items=0),
        attitude=attitude,
        risk_flags=flags,
        background=_text(data, "background", pid, src, required=False),
        source=str(data.get("source") or src or "unknown"),
    )


def _distortions(data: Mapping[str, Any], pid: str | None, src: str | None) -> tuple[str, ...]:
    value = data.get("distortions") or []
    if not value:
        return ()
    # The labels live with the detectors (rewards/distortions/taxonomy.yaml); imported only for a labelled profile.
    from rewards.distortions.taxonomy import check_labels

    try:
        return check_labels(value, repr(value))
    except ValueError as e:
        raise ProfileError(str(e), source=src, profile_id=pid, field="distortions") from None


def _whole_years(value: Any) -> int | None:
    """An age as an int, or None when it is not a whole number: ``int(3.5)`` would make 3 of a typo and
    ``True`` would pass as 1, so only ints and digit strings (LLM4CBT writes ``PATIENT_AGE: '34'``) count."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
