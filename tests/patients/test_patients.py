from cbtgym.patients import LLMPatient, RulePatient, clean_reply, read_cues
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


def test_cues_separate_thought_questions_from_advice():
    assert read_cues("What went through your mind when she didn't call?").asks_thoughts
    assert read_cues("What went through your mind when she didn't call?").open_question
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
    assert state.disclosed == ["thought", "belief"]


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


def test_llm_patient_prompt_reveals_the_thought_only_after_a_thought_question():
    prof = profile()
    backend = echo_patient_backend()
    patient = LLMPatient(backend, rate_satisfaction=False)
    state, _ = talk(patient, prof, ["How are you feeling today?"])
    assert prof.automatic_thoughts[0] not in patient.system_prompt(state)
    state, _ = talk(patient, prof, ["What went through your mind when it happened?"])
    assert prof.automatic_thoughts[0] in patient.system_prompt(state)
    assert "PASSIVE" in patient.system_prompt(patient.new_state(profile(attitude="passive")))


def test_clean_reply_removes_role_confusion_and_template_tokens():
    text, meta = clean_reply("Patient: I feel awful.<|im_end|>\nTherapist: Why do you feel awful?")
    assert text == "I feel awful." and meta["cut_role_confusion"] and meta["removed_template_tokens"]
    text, meta = clean_reply("I need to go now. [LEAVE]")
    assert text == "I need to go now." and meta["leave"]
    text, meta = clean_reply("<|im_start|>")
    assert text == "..." and meta["empty_after_cleaning"]


def test_llm_patient_satisfaction_parsed_or_flagged():
    from cbtgym.backends.scripted import ScriptedBackend

    def reply(conv, s):
        return "not a number" if "Rate how satisfied" in conv[-1]["content"] else "Okay."

    patient = LLMPatient(ScriptedBackend(reply))
    _, t = talk(patient, profile(), ["How are you feeling?"])
    assert t.patient_turns[-1].satisfaction is None
    assert t.patient_turns[-1].meta["satisfaction_unparsed"] == "not a number"
    _, t = talk(LLMPatient(echo_patient_backend()), profile(), ["How are you feeling?"])
    assert 0 <= t.patient_turns[-1].satisfaction <= 100
