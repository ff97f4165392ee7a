"""A simulated patient played by an LLM, prompted from its profile and attitude."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from ..backends.base import Backend, Sampling
from ..profiles.schema import PatientProfile
from ..transcript import Transcript
from .base import LEAVE_TOKEN, SATISFACTION_START, PatientReply, PatientState, clean_reply, last_therapist_text, unlock
from .course_memory import CourseMemory, homework_status
from .moves import MoveReader, default_reader
from .rule_patient import risk_statements

_PROMPTS = Path(__file__).with_name("prompts")
_INT = re.compile(r"\b(100|[1-9]?\d)\b")
RATING_MODES = (True, False, "turn", "end")
RATING_SETTINGS = ("end", "turn", "never")  # the scripts' ``patient_ratings`` values (``configured``)
#: ``gated``: layers reach the model in notes as the therapist's questions earn them; ``free``: the whole profile
#: is in the system prompt (for capable models). The scripts' ``patient_disclosure`` values.
DISCLOSURE_MODES = ("gated", "free")
#: How a rating is asked for: a few greedy tokens (one integer).
RATING_SAMPLING = Sampling(max_new_tokens=6, temperature=0.0)


def _template(name: str) -> str:
    return (_PROMPTS / name).read_text()


def parse_rating(text: str) -> int | None:
    """The first integer 0-100 in a rater's answer; ``None`` when there is none (never filled in)."""
    m = _INT.search(text)
    return int(m.group(1)) if m else None


def rating_history(transcript: Transcript) -> str:
    """The ratings a patient gave so far in ``transcript``, after the start value: ``"30 (start), 45, 50"``."""
    return ", ".join([f"{SATISFACTION_START} (start)", *map(str, transcript.satisfaction_series())])


def situation_fact(profile: PatientProfile) -> str:
    """The one item a patient may talk about from the start: its situation, vaguely."""
    return f"- The situation, vaguely: it has to do with {profile.disorder_description.split('.')[0].lower()}."


def layer_facts(profile: PatientProfile) -> dict[str, str | None]:
    """The bullet line each profile layer adds to what the patient may talk about (None: nothing)."""
    p = profile
    return {
        "emotions": f"- How you feel: {', '.join(p.emotions)}." if p.emotions else None,
        "experience": f"- What happened: {p.situation}",
        "reaction": "- How you reacted: " + " ".join(p.reactions),
        "thought": "- What went through your mind (your automatic thought): " + " / ".join(p.automatic_thoughts),
        "belief": f"- What you believe deep down: {p.core_belief}",
    }


def all_facts(profile: PatientProfile) -> str:
    """Every fact of the profile as bullet lines: what a ``free`` patient knows from the start."""
    lines = [situation_fact(profile)] + [f for f in layer_facts(profile).values() if f]
    risk = risk_fact(profile)
    return "\n".join(lines + ([risk] if risk else []))


def risk_fact(profile: PatientProfile) -> str | None:
    """What a patient with risk flags has been holding back; it comes with the first disclosed layer."""
    if not profile.risk_flags:
        return None
    return f"- Something you have been holding back: {risk_statements()[profile.risk_flags[0]]}"


def unlocked_facts(state: PatientState) -> dict[int, list[str]]:
    """The bullet lines each unlock added, keyed by the patient turn they came before."""
    facts, risk = layer_facts(state.profile), risk_fact(state.profile)
    out: dict[int, list[str]] = {}
    for i, (layer, turn) in enumerate(zip(state.disclosed, state.disclosed_turn)):
        lines = [facts[layer]] if facts.get(layer) else []
        if i == 0 and risk:
            lines.append(risk)
        if lines:
            out.setdefault(turn, []).extend(lines)
    return out


def chat_with_notes(transcript: Transcript, system: str, notes: Mapping[int, str]) -> list[dict[str, str]]:
    """The patient's chat with each note as a system message just before the patient turn it precedes.

    ``notes[k]`` goes right after the therapist message answered by patient turn ``k``
    (0-based; ``k == len(transcript.patient_turns)`` is the reply being generated now).
    Earlier messages never change, so each turn's chat extends the last one (prefix caching).
    """
    chat = transcript.as_chat("patient", system)
    head = len(chat) - len(transcript.turns)
    out, replies = chat[:head], 0
    for turn, message in zip(transcript.turns, chat[head:]):
        if turn.speaker == "patient":
            out += _note_message(notes, replies)
            replies += 1
        out.append(message)
    return out + _note_message(notes, replies)


def _note_message(notes: Mapping[int, str], turn: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": notes[turn]}] if turn in notes else []


class LLMPatient:
    """A patient played by any backend.

    The system prompt (one template per attitude, in ``prompts/``) holds only what
    never changes in a session: the persona, the disorder, the attitude and the
    situation, vaguely. When the therapist's questions reach a deeper layer of the
    profile (by meaning, as for :class:`~cbtgym.patients.rule_patient.RulePatient`:
    :mod:`cbtgym.patients.moves`), a note (``prompts/llm_patient_note.txt``) naming the new fact enters the
    chat as a system message right after the therapist message that earned it, and
    stays there: the automatic thought reaches the model only once the therapist asks
    about thoughts, so even a weak model cannot volunteer it early. Replies are
    cleaned of role confusion. The patient may leave by writing ``[LEAVE]``.

    That gating is for small models (SmolLM2), which otherwise blurt the thought out
    at once. A capable model (the Llama 3.1 configs) plays the patient better with its
    whole profile in view: ``disclosure="free"`` puts every layer in the system prompt
    and sends no notes.

    In a course (a :class:`~cbtgym.patients.course_memory.CourseMemory` given to :meth:`new_state`)
    the system prompt ends with what the patient remembers (:meth:`memory_text`): the layers it
    already told, what changed, and the homework it was given and did or did not do. Either way each reply's ``meta["disclosed"]`` records the layer the
    therapist's move reached, so "AT reached" means the same in both modes.

    The chat is append-only: each turn's conversation is the previous one plus new
    messages, so prefix caches (vLLM's automatic prefix caching, an HF KV prefix
    cache) reuse the whole earlier session; a system prompt rewritten at each unlock
    would invalidate everything after it. The backend's chat template must accept
    system messages after the first (ChatML/SmolLM2, Qwen2.5, Llama 3 and
    OpenAI-compatible servers do).

    Args:
        backend: Any :class:`~cbtgym.backends.base.Backend`.
        sampling: Decoding for replies (default: temperature 0.7, 96 tokens, seeded).
        rate_satisfaction: Also ask the patient for a 0-100 rating (Witte et al.; one extra
            batched call): ``True`` or ``"turn"`` after each reply, ``"end"`` only after the
            session's last one (the round budget reached, or the patient leaving), ``False`` never.
        note_template: The unlock note's template (``{facts}`` is filled); default ``prompts/llm_patient_note.txt``.
            ``bench/patient_disclosure.py --note`` measures how often a template gets the thought said.
        disclosure: ``"gated"`` (default: layers arrive in notes as they are earned) or ``"free"`` (the whole
            profile in the system prompt); see above.
        rating_template: The rating request (default ``prompts/llm_patient_rating.txt``), filled with ``{name}``,
            ``{previous}`` (the last rating), ``{history}`` (:func:`rating_history`) and ``{dialogue}``.
        reader: Reads therapist moves (default: the process-wide :class:`~cbtgym.patients.moves.MoveReader`).
    """

    name = "llm"

    def __init__(self, backend: Backend, sampling: Sampling | None = None, rate_satisfaction: bool = True,
                 note_template: str | None = None, disclosure: str = "gated", reader: MoveReader | None = None,
                 rating_template: str | None = None) -> None:
        if disclosure not in DISCLOSURE_MODES:
            raise ValueError(f"LLMPatient(disclosure={disclosure!r}): use 'gated' (layers arrive as the therapist's "
                             "questions reach them; small models) or 'free' (the whole profile up front; capable models)")
        self.disclosure = disclosure
        self._reader = reader
        self._disclosure_text = yaml.safe_load((_PROMPTS / "llm_patient_disclosure.yaml").read_text())[disclosure]
        self._memory_text = yaml.safe_load((_PROMPTS / "llm_patient_memory.yaml").read_text())
        self.backend = backend
        self.sampling = sampling or Sampling(max_new_tokens=96, temperature=0.7, top_p=0.95, seed=0)
        if rate_satisfaction not in RATING_MODES:
            raise ValueError(f"LLMPatient(rate_satisfaction={rate_satisfaction!r}): use True or 'turn' (each reply), "
                             "'end' (the session's last reply) or False")
        self.rate_satisfaction = "turn" if rate_satisfaction is True else rate_satisfaction
        self._templates = {a: _template(f"llm_patient_{a}.txt") for a in ("active", "passive")}
        self._note = note_template if note_template is not None else _template("llm_patient_note.txt")
        if "{facts}" not in self._note:
            raise ValueError("LLMPatient(note_template=...): the template must contain {facts}, where the unlocked facts go")
        self._rating = rating_template if rating_template is not None else _template("llm_patient_rating.txt")
        if "{dialogue}" not in self._rating:
            raise ValueError("LLMPatient(rating_template=...): the template must contain {dialogue}, where the session goes")

    @classmethod
    def configured(cls, backend: Backend, max_new_tokens: int, temperature: float, ratings: str,
                   seed: int = 0, disclosure: str = "gated") -> "LLMPatient":
        """The patient as the scripts' configs describe it (``patient_max_new_tokens``, ``patient_temperature``,
        ``patient_ratings`` in ``RATING_SETTINGS``, ``patient_disclosure`` in ``DISCLOSURE_MODES``): seeded nucleus
        sampling (top_p 0.95), so training and benchmark patients decode alike."""
        if ratings not in RATING_SETTINGS:
            raise ValueError(f"patient_ratings must be one of {RATING_SETTINGS} (got {ratings!r})")
        if disclosure not in DISCLOSURE_MODES:
            raise ValueError(f"patient_disclosure must be one of {DISCLOSURE_MODES} (got {disclosure!r})")
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95, seed=seed)
        return cls(backend, sampling=sampling, rate_satisfaction=False if ratings == "never" else ratings,
                   disclosure=disclosure)

    @property
    def reader(self) -> MoveReader:
        if self._reader is None:
            self._reader = default_reader()
        return self._reader

    def new_state(self, profile: PatientProfile, memory: CourseMemory | None = None) -> PatientState:
        return PatientState.opening(profile, memory)

    def system_prompt(self, state: PatientState) -> str:
        """The part of the prompt that stays the same for the whole session (in a course, with its memory)."""
        p = state.profile
        memory = self.memory_text(state)
        return self._templates[p.attitude].format(
            name=p.persona.name or "the patient",
            age=p.persona.age,
            gender=p.persona.gender.lower(),
            occupation=p.persona.occupation.lower(),
            disorder=p.disorder,
            disorder_description=p.disorder_description,
            ready_heading=self._disclosure_text["heading"],
            ready=situation_fact(p) if self.disclosure == "gated" else all_facts(p),
            disclosure_rule=self._disclosure_text["rule"],
            leave_token=LEAVE_TOKEN,
        ) + (f"\n\n{memory}" if memory else "")

    def memory_text(self, state: PatientState) -> str:
        """What the patient remembers of its course (``prompts/llm_patient_memory.yaml``); "" in a first session.

        Gated, the facts of the layers earlier sessions reached are here (no note brings them again);
        free, every fact is in the prompt already and only their names are.
        """
        m = state.memory
        if m is None or m.sessions == 0:
            return ""
        text = self._memory_text
        lines = [text["heading"].format(session=m.sessions + 1)]
        if not m.reached:
            lines.append(text["told_nothing"])
        elif self.disclosure == "gated":
            facts, risk = layer_facts(state.profile), risk_fact(state.profile)
            lines += [text["told"]] + [facts[layer] for layer in m.reached if facts.get(layer)] + ([risk] if risk else [])
        else:
            lines.append(f"{text['told']} {', '.join(text['layer_names'][layer] for layer in m.reached)}.")
        if m.new_layers:
            lines.append(text["new_layers"].format(layers=", ".join(text["layer_names"][layer] for layer in m.new_layers)))
        lines.append(text["homework"][homework_status(m)].format(homework=m.homework))
        if m.satisfaction is not None:
            lines.append(text["satisfaction"].format(satisfaction=m.satisfaction))
        return "\n".join(lines)

    def notes(self, state: PatientState) -> dict[int, str]:
        """The note for each patient turn that came after an unlock, keyed by that turn's index (none when free)."""
        if self.disclosure == "free":
            return {}
        return {turn: self._note.format(facts="\n".join(lines)) for turn, lines in unlocked_facts(state).items()}

    def chat(self, state: PatientState, transcript: Transcript) -> list[dict[str, str]]:
        """The conversation the backend sees for the patient's next reply."""
        return chat_with_notes(transcript, self.system_prompt(state), self.notes(state))

    def respond(self, states: Sequence[PatientState], transcripts: Sequence[Transcript]) -> list[PatientReply]:
        asked = [i for i, t in enumerate(transcripts) if t.patient_turns]
        moves = dict(zip(asked, self.reader.read([last_therapist_text(transcripts[i]) for i in asked])))
        layers = []
        for i, (state, transcript) in enumerate(zip(states, transcripts)):
            layer = unlock(state, moves[i]) if i in moves else None
            if layer:
                state.disclose(layer, len(transcript.patient_turns))
            layers.append(layer)
        convs = [self.chat(s, t) for s, t in zip(states, transcripts)]
        raw = self.backend.generate(convs, self.sampling)
        replies = []
        for state, text, layer in zip(states, raw, layers):
            cleaned, meta = clean_reply(text)
            meta.update(raw=text, disclosed=layer)
            left = bool(meta.get("leave"))
            state.left = state.left or left
            replies.append(PatientReply(cleaned, left=left, meta=meta))
        rated = [i for i, (s, r) in enumerate(zip(states, replies))
                 if self.rate_satisfaction == "turn" or (self.rate_satisfaction == "end" and (s.last_round or r.left))]
        if rated:
            self._rate([states[i] for i in rated], [transcripts[i] for i in rated], [replies[i] for i in rated])
        return replies

    def _rate(self, states, transcripts, replies) -> None:
        convs = []
        for s, t, r in zip(states, transcripts, replies):
            dialogue = t.render() + f"\nPatient: {r.text}"
            prompt = self._rating.format(name=s.profile.persona.name or "the patient", previous=s.satisfaction,
                                         history=rating_history(t), dialogue=dialogue)
            convs.append([{"role": "user", "content": prompt}])
        texts = self.backend.generate(convs, RATING_SAMPLING)
        for s, r, text in zip(states, replies, texts):
            rating = parse_rating(text)
            if rating is not None:
                s.satisfaction = r.satisfaction = rating
            else:
                r.meta["satisfaction_unparsed"] = text
