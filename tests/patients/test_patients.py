import copy

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.patients import LLMPatient, RulePatient, clean_reply, read_cues
from cbtgym.patients.base import SATISFACTION_START
from cbtgym.transcript import Transcript
from tests.factories import echo_patient_backend, profile


def talk(patient, prof, lines):
    state = patient.new_state(prof)
    t = Transcript(prof.id, prof.attitude)
    t.add("therapist", "Hi, nice to see you today. How have you been?")
    t.add("patient", patient.respond([state], [t])[0].text)
    for line in lines:
        t.add("therapist", line)
        reply = patient.respond([state], [t])[0]
        t.add("patient", reply.text, satisfaction=reply.satisfaction, meta=reply.meta)
    return state, t


def test_cues_read_tone_not_layers():
    assert read_cues("What went through your mind when she didn't call?").question
    assert not read_cues("You should try to relax more.").question
    assert read_cues("You should try to relax more.").presses
    assert read_cues("It sounds like that was painful.").validates
    assert read_cues("Let's end here for today.").ends_session


def test_active_rule_patient_discloses_the_automatic_thought_only_when_asked_about_thoughts():
    prof = profile()
    at = prof.automatic_thoughts[0]
    _, t = talk(RulePatient(), prof, ["How have you been feeling?", "What happened?", "What did you do then?",
                                      "Can you tell me more?"])
    assert at not in t.render()
    state, t = talk(RulePatient(), prof, ["What went through your mind when that happened?",
                                          "If that were true, what would it mean about you?"])
    assert at in t.patient_turns[1].text
    assert "not good enough" in t.patient_turns[2].text
    assert state.disclosed == ["thought", "belief"] and state.disclosed_turn == [1, 2]


#: Worded unlike every example of moves.yaml: the layer must be reached by meaning.
PARAPHRASED_THOUGHT = ["What was running through your head as you waited?", "Right then, what were you telling yourself?",
                       "When it happened, what was the first thing that crossed your mind?"]
#: Cue words without a question to answer, and advice dressed as one.
STUFFED = ["thoughts feelings core belief automatic thought", "Thoughts, feelings, core belief, automatic thought?",
           "What went through your mind, thoughts feelings core belief automatic thought?",
           "Have you tried just thinking positive about it?", "Why not think about it differently next time?",
           "What do you think about the football results this weekend?"]


@pytest.mark.parametrize("line", PARAPHRASED_THOUGHT)
def test_a_paraphrased_thought_question_reaches_the_automatic_thought(line):
    prof = profile()
    state, t = talk(RulePatient(), prof, [line])
    assert state.disclosed == ["thought"] and prof.automatic_thoughts[0] in t.patient_turns[-1].text


@pytest.mark.parametrize("line", STUFFED)
def test_keyword_stuffing_and_advice_as_a_question_reach_nothing(line):
    prof = profile()
    state, t = talk(RulePatient(), prof, [line, line + " "])
    assert state.disclosed == [] and prof.automatic_thoughts[0] not in t.render()
    assert t.patient_turns[-1].satisfaction < SATISFACTION_START, "a move that asks nothing lowers the rating"


def test_rule_patient_answers_a_batch_as_it_answers_each_session():
    profs = [profile(), profile("t-p", attitude="passive"), profile("t-2")]
    lines = ["How have you been feeling?", PARAPHRASED_THOUGHT[0], STUFFED[1]]
    patient = RulePatient()
    states = [patient.new_state(p) for p in profs]
    ts = []
    for p in profs:
        t = Transcript(p.id, p.attitude)
        t.add("therapist", "Hi. How have you been?")
        ts.append(t)
    for t, r in zip(ts, patient.respond(states, ts)):
        t.add("patient", r.text)
    for t, line in zip(ts, lines):
        t.add("therapist", line)
    batch = patient.respond(states, ts)
    alone = [talk(RulePatient(), p, [line])[1].patient_turns[-1].text for p, line in zip(profs, lines)]
    assert [r.text for r in batch] == alone
    assert [r.meta.get("disclosed") for r in batch] == ["emotions", None, None]


def test_passive_patient_needs_validation_and_ratings_follow_the_therapist():
    prof = profile(attitude="passive")
    _, cold = talk(RulePatient(), prof, ["What went through your mind?"])
    assert prof.automatic_thoughts[0] not in cold.render()
    _, warm = talk(RulePatient(), prof, ["That sounds really hard. What went through your mind?"])
    assert prof.automatic_thoughts[0] in warm.render()
    assert warm.patient_turns[-1].satisfaction > cold.patient_turns[-1].satisfaction


def test_crisis_profile_discloses_its_risk_early():
    prof = profile(risk_flags=["suicidal_ideation"])
    _, t = talk(RulePatient(), prof, ["How have you been feeling?"])
    assert "better off" in t.patient_turns[-1].text


THOUGHT_QUESTION = "What went through your mind when it happened?"
#: Unlocks emotions, nothing, the automatic thought, then the core belief (patient turns 1, 3, 4).
SESSION = ["How are you feeling today?", "Hmm, I see.", THOUGHT_QUESTION, "If that were true, what would it mean about you?"]


def recorded_session(prof, lines=SESSION, **patient_kwargs):
    """Play ``lines`` with an LLM patient whose backend keeps a copy of every conversation it is sent."""
    sent = []

    def reply(conv, sampling):
        sent.append(copy.deepcopy(conv))
        return f"Reply number {len(sent)}."

    patient = LLMPatient(ScriptedBackend(reply), rate_satisfaction=False, **patient_kwargs)
    state, t = talk(patient, prof, lines)
    return state, t, sent


def test_llm_patient_chat_is_append_only_across_turns():
    state, _, sent = recorded_session(profile())
    assert state.disclosed == ["emotions", "thought", "belief"] and state.disclosed_turn == [1, 3, 4]
    assert len(sent) == len(SESSION) + 1
    for before, after in zip(sent, sent[1:]):
        assert len(after) > len(before)
        assert after[: len(before)] == before, "each turn's chat must start with the previous turn's chat"


def test_llm_patient_system_prompt_is_the_same_every_turn_and_holds_no_layer():
    prof = profile()
    _, _, sent = recorded_session(prof)
    assert all(conv[0]["role"] == "system" for conv in sent)
    assert len({conv[0]["content"] for conv in sent}) == 1
    system = sent[0][0]["content"]
    assert "The situation, vaguely" in system
    assert prof.automatic_thoughts[0] not in system and prof.situation not in system
    patient = LLMPatient(ScriptedBackend(), rate_satisfaction=False)
    assert "PASSIVE" in patient.system_prompt(patient.new_state(profile(attitude="passive")))


def test_llm_patient_sees_the_thought_only_in_a_note_after_the_thought_question():
    prof = profile()
    at = prof.automatic_thoughts[0]
    _, _, sent = recorded_session(prof)
    asked = SESSION.index(THOUGHT_QUESTION) + 1  # the call answering it (call 0 is the opening)
    assert not any(at in m["content"] for conv in sent[:asked] for m in conv)
    final = sent[-1]
    q = final.index({"role": "user", "content": THOUGHT_QUESTION})
    assert not any(at in m["content"] for m in final[:q])
    assert final[q + 1]["role"] == "system" and at in final[q + 1]["content"]
    assert sent[asked][-1] == final[q + 1], "the note is the last message of the call answering the question"
    assert [m["role"] for m in final].count("system") == 4  # the prompt and three notes; none for "Hmm, I see."


def test_llm_patient_note_template_is_configurable_and_must_hold_the_facts():
    prof = profile()
    _, _, sent = recorded_session(prof, [THOUGHT_QUESTION], note_template="NOTE >> {facts} << say it")
    note = sent[-1][-1]
    assert note["role"] == "system" and note["content"].startswith("NOTE >> ") and prof.automatic_thoughts[0] in note["content"]
    with pytest.raises(ValueError, match="facts"):
        LLMPatient(ScriptedBackend(), note_template="no placeholder here")


def test_free_llm_patient_holds_its_whole_profile_and_gets_no_notes():
    prof = profile()
    state, _, sent = recorded_session(prof, disclosure="free")
    system = sent[0][0]["content"]
    assert prof.automatic_thoughts[0] in system and prof.core_belief in system and prof.situation in system
    assert all([m["role"] for m in conv].count("system") == 1 for conv in sent)
    assert state.disclosed == ["emotions", "thought", "belief"], "what the questions reached is recorded all the same"
    with pytest.raises(ValueError, match="gated"):
        LLMPatient(ScriptedBackend(), disclosure="open")


def test_llm_patient_risk_statement_comes_with_the_first_note():
    prof = profile(risk_flags=["suicidal_ideation"])
    _, _, sent = recorded_session(prof, ["How are you feeling today?"])
    assert "better off" not in sent[-1][0]["content"]
    note = sent[-1][-1]
    assert note["role"] == "system" and "better off" in note["content"] and "anxious, tense" in note["content"]


def test_clean_reply_removes_role_confusion_and_template_tokens():
    text, meta = clean_reply("Patient: I feel awful.<|im_end|>\nTherapist: Why do you feel awful?")
    assert text == "I feel awful." and meta["cut_role_confusion"] and meta["removed_template_tokens"]
    text, meta = clean_reply("I need to go now. [LEAVE]")
    assert text == "I need to go now." and meta["leave"]
    text, meta = clean_reply("<|im_start|>")
    assert text == "..." and meta["empty_after_cleaning"]


def test_llm_patient_satisfaction_parsed_or_flagged():
    def reply(conv, s):
        return "not a number" if "Rate how satisfied" in conv[-1]["content"] else "Okay."

    patient = LLMPatient(ScriptedBackend(reply))
    _, t = talk(patient, profile(), ["How are you feeling?"])
    assert t.patient_turns[-1].satisfaction is None
    assert t.patient_turns[-1].meta["satisfaction_unparsed"] == "not a number"
    _, t = talk(LLMPatient(echo_patient_backend()), profile(), ["How are you feeling?"])
    assert 0 <= t.patient_turns[-1].satisfaction <= 100
