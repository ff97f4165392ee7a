"""Reading transcribed therapist speech for the act classifier: cleaning, segments, the main segment, form cues."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.acts import speech
from rewards.acts.speech import analyse, clean, cue_features, cue_names, is_check_in, segments, unpunctuated


def cues_of(text: str) -> dict[str, float]:
    return dict(zip(cue_names(), cue_features([analyse(text)])[0]))


def test_clean_drops_fillers_padding_and_stutters():
    assert clean("Um, so one of the things we-we have here is, you know, the idea") == "so one of the things we have here is the idea"
    assert clean("And, and after the argument, uh, how were you feeling?") == "And after the argument how were you feeling?"
    assert clean("Mm-hm.") == "Mm-hm."  # nothing but a filler: kept, so there is something to embed
    assert clean("that that is fine") == "that is fine"


def test_segments_drop_markers_and_back_channels():
    assert segments("Yeah. Right, right. So, okay, what happened next?") == ["what happened next?"]
    assert segments("You felt let down. And then you went home.") == ["You felt let down.", "you went home."]


def test_main_segment_skips_a_check_in_tail():
    a = analyse("So avoidance brings relief now, but it keeps the fear going. Does that make sense?")
    assert a.main == "avoidance brings relief now, but it keeps the fear going." and a.check_in_tail
    assert is_check_in("How does that sound?") and is_check_in("is that okay") and not is_check_in("How did that feel?")
    b = analyse("That sounds hard. What happened after she left?")
    assert b.main == "What happened after she left?" and not b.check_in_tail
    only = analyse("Does that make sense?")  # a lone check-in is its own main segment
    assert only.main == "Does that make sense?" and not only.check_in_tail


@pytest.mark.parametrize(
    "text, cue",
    [
        ("I'm wondering what went through your mind", "main_indirect_question"),
        ("tell me a bit about the weekend", "main_indirect_question"),
        ("and after the argument how did you feel", "main_inverted_question"),
        ("so have you been sleeping at all", "main_you_question"),
        ("maybe this week you could try writing it down", "main_suggestion"),
        ("maybe this week you could try writing it down", "main_planning"),
        ("so what happens with anxiety is your body kind of goes on alert", "main_explanatory"),
        ("honestly that's really common, lots of people feel that", "main_normalising"),
        ("okay we've got five minutes left so let's wrap up", "main_logistics"),
    ],
)
def test_form_cues_fire_on_speech(text, cue):
    assert cues_of(text)[cue] > 0


def test_form_cues_stay_off_where_they_should():
    c = cues_of("So you felt hurt when she didn't come.")
    assert c["main_indirect_question"] == c["main_inverted_question"] == c["ends_with_q"] == 0
    assert c["main_reflective_opening"] > 0
    assert cue_features([]).shape == (0, len(cue_names()))
    assert np.all((cue_features([analyse("How did you feel?")]) >= 0) & (cue_features([analyse("Hi.")]) <= 1))


def test_unpunctuated_is_a_bare_transcript():
    assert unpunctuated("So, okay. What happened?  I'm wondering!") == "so okay what happened i'm wondering"


def test_bad_cue_file_names_the_field(tmp_path):
    good = speech.CUES_FILE.read_text()
    p = tmp_path / "cues.yaml"
    p.write_text(good.replace("wh_start: '", "wh_start: '(unclosed"))
    with pytest.raises(ValueError, match=r"field 'cues\.wh_start' is not a valid regular expression"):
        speech.load_cues(p)
    p.write_text("fillers: 'um'\n")
    with pytest.raises(ValueError, match=r"field 'cues' must map"):
        speech.load_cues(p)
