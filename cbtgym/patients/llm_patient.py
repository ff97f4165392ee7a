"""A simulated patient played by an LLM, prompted from its profile and attitude."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..backends.base import Backend, Sampling
from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .base import LEAVE_TOKEN, PatientReply, PatientState, clean_reply, last_therapist_cues, unlock
from .rule_patient import risk_statements

_PROMPTS = Path(__file__).with_name("prompts")
_INT = re.compile(r"\b(100|[1-9]?\d)\b")


def _template(name: str) -> str:
    return (_PROMPTS / name).read_text()


def ready_list(state: PatientState) -> str:
    """The profile layers this patient has been led to, as bullet lines for its prompt."""
    p = state.profile
    items = [f"- The situation, vaguely: it has to do with {p.disorder_description.split('.')[0].lower()}."]
    facts = {
        "emotions": f"- How you feel: {', '.join(p.emotions)}." if p.emotions else None,
        "experience": f"- What happened: {p.situation}",
        "reaction": "- How you reacted: " + " ".join(p.reactions),
        "thought": "- What went through your mind (your automatic thought): " + " / ".join(p.automatic_thoughts),
        "belief": f"- What you believe deep down: {p.core_belief}",
    }
    items += [facts[layer] for layer in state.disclosed if facts.get(layer)]
    if p.risk_flags and state.disclosed:
        items.append(f"- Something you have been holding back: {risk_statements()[p.risk_flags[0]]}")
    return "\n".join(items)


class LLMPatient:
    """A patient played by any backend.

    The prompt (one template per attitude, in ``prompts/``) carries the persona, the
    disorder and only the layers of the profile the therapist's questions have
    reached so far (the same cues as :class:`~cbtgym.patients.rule_patient.RulePatient`
    decide): the automatic thought enters the prompt only once the therapist asks
    about thoughts, so even a weak model cannot volunteer it early. Replies are
    cleaned of role confusion. The patient may leave by writing ``[LEAVE]``.

    Args:
        backend: Any :class:`~cbtgym.backends.base.Backend`.
        sampling: Decoding for replies (default: temperature 0.7, 96 tokens, seeded).
        rate_satisfaction: Also ask the patient for a 0-100 rating after each turn
            (Witte et al.); one extra batched call per step.
    """

    name = "llm"

    def __init__(self, backend: Backend, sampling: Sampling | None = None, rate_satisfaction: bool = True) -> None:
        self.backend = backend
        self.sampling = sampling or Sampling(max_new_tokens=96, temperature=0.7, top_p=0.95, seed=0)
        self.rate_satisfaction = rate_satisfaction
        self._templates = {a: _template(f"llm_patient_{a}.txt") for a in ("active", "passive")}
        self._rating = _template("llm_patient_rating.txt")

    def new_state(self, profile: PatientProfile) -> PatientState:
        return PatientState(profile=profile)

    def system_prompt(self, state: PatientState) -> str:
        p = state.profile
        return self._templates[p.attitude].format(
            name=p.persona.name or "the patient",
            age=p.persona.age,
            gender=p.persona.gender.lower(),
            occupation=p.persona.occupation.lower(),
            disorder=p.disorder,
            disorder_description=p.disorder_description,
            ready=ready_list(state),
            leave_token=LEAVE_TOKEN,
        )

    def respond(self, states: Sequence[PatientState], transcripts: Sequence[Transcript]) -> list[PatientReply]:
        layers = []
        for state, transcript in zip(states, transcripts):
            layer = unlock(state, last_therapist_cues(transcript)) if transcript.patient_turns else None
            if layer:
                state.disclosed.append(layer)
            layers.append(layer)
        convs = [t.as_chat("patient", self.system_prompt(s)) for s, t in zip(states, transcripts)]
        raw = self.backend.generate(convs, self.sampling)
        replies = []
        for state, text, layer in zip(states, raw, layers):
            cleaned, meta = clean_reply(text)
            meta.update(raw=text, disclosed=layer)
            left = bool(meta.get("leave"))
            state.left = state.left or left
            replies.append(PatientReply(cleaned, left=left, meta=meta))
        if self.rate_satisfaction:
            self._rate(states, transcripts, replies)
        return replies

    def _rate(self, states, transcripts, replies) -> None:
        convs = []
        for s, t, r in zip(states, transcripts, replies):
            dialogue = t.render() + f"\nPatient: {r.text}"
            prompt = self._rating.format(name=s.profile.persona.name or "the patient", previous=s.satisfaction, dialogue=dialogue)
            convs.append([{"role": "user", "content": prompt}])
        texts = self.backend.generate(convs, Sampling(max_new_tokens=6, temperature=0.0))
        for s, r, text in zip(states, replies, texts):
            m = _INT.search(text)
            if m:
                s.satisfaction = int(m.group(1))
                r.satisfaction = s.satisfaction
            else:
                r.meta["satisfaction_unparsed"] = text
