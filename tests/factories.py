"""Small profiles and deterministic backends for logic tests."""

from __future__ import annotations

from cbtgym.backends.scripted import ScriptedBackend, stable_index
from cbtgym.profiles.schema import PatientProfile


def profile(pid: str = "t-gad", attitude: str = "active", risk_flags=(), **overrides) -> PatientProfile:
    data = dict(
        id=pid,
        persona=dict(age=34, gender="female", occupation="nurse", name="Ana"),
        disorder="GAD",
        disorder_description="Worries all day about her work. She cannot relax in the evenings.",
        situation="I have a performance review at work next week.",
        reactions=["I stay up late re-reading my old reports."],
        automatic_thoughts=["If I make one mistake, they will see I am not cut out for this job."],
        core_belief="I am not good enough.",
        emotions=["anxious", "tense"],
        attitude=attitude,
        risk_flags=list(risk_flags),
    )
    data.update(overrides)
    return PatientProfile.from_dict(data)


def profiles() -> list[PatientProfile]:
    return [
        profile("t-gad", "active"),
        profile("t-gad-p", "passive"),
        profile("t-ocd", "active", disorder="OCD", situation="I have to check the stove before I leave.",
                automatic_thoughts=["If I don't check, the house will burn down and it will be my fault."]),
        profile("t-dep", "passive", disorder="depression", risk_flags=["suicidal_ideation"],
                automatic_thoughts=["Nothing I do ever works out."]),
    ]


def echo_patient_backend(name: str = "scripted-patient") -> ScriptedBackend:
    """Replies that depend on the whole conversation, so any mix-up between sessions shows."""
    lines = ["I don't know.", "It has been hard.", "I keep worrying.", "Maybe.", "I feel stuck."]

    def reply(conv, sampling):
        if conv[-1]["content"].startswith("You are") and "Rate how satisfied" in conv[-1]["content"]:
            return str(20 + stable_index(conv, 60))
        return f"{lines[stable_index(conv, len(lines))]} (turn {len(conv)})"

    return ScriptedBackend(reply, name=name)
