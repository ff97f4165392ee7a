"""Cognitive-distortion labels: the taxonomy, the reply parser, both detectors, the profile field and the calibration kind."""

from __future__ import annotations

import json

import pytest

from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.profiles.loaders import load_profiles
from cbtgym.profiles.schema import PatientProfile, ProfileError
from rewards.calibration import calibrate
from rewards.distortions.data import EVAL_FILE, TRAIN_FILE, load_thoughts
from rewards.distortions.llm_detector import parse_labels_reply
from rewards.distortions.taxonomy import distortion_labels, labels_in
from rewards.factory import make_judge


def test_taxonomy_has_the_13_beck_burns_labels_and_reads_aliases():
    assert len(distortion_labels()) == 13 and {"catastrophizing", "should_statements", "blaming"} <= set(distortion_labels())
    assert labels_in("That is black-and-white thinking, and some catastrophising.") == ["all_or_nothing", "catastrophizing"]
    assert labels_in("You seem tired.") == []


@pytest.mark.parametrize("reply, expected", [
    ('{"labels": ["mind_reading", "Labelling"], "rationale": "r"}', ("mind_reading", "labeling")),
    ('{"labels": []}', ()),
    ("Sounds like fortune-telling to me.", ("fortune_telling",)),
    ("There is no distortion in this thought.", ()),
    ("Tell me more about that.", None),
    ('{"labels": ["sadness"]}', None),
    ('{"labels": ["labeling", "blaming", "mind_reading", "minimization"]}', None),  # more than max_labels
])
def test_replies_are_read_into_labels_or_counted_unparsed(reply, expected):
    parsed = parse_labels_reply(reply, max_labels=3)
    assert (None if parsed is None else parsed[0]) == expected


def test_llm_detector_batches_and_flags_replies_that_never_parse():
    def reply(conv, sampling):
        return '{"labels": ["should_statements"], "rationale": "a rule"}' if "never rest" in conv[-1]["content"] else "Hmm."

    detector = make_judge("distortions", ScriptedBackend(reply), max_attempts=2)
    assert detector.schema["properties"]["labels"]["maxItems"] == 3
    ok, bad = detector.detect(["I should never rest.", "The sky is blue."])
    assert ok.labels == ("should_statements",) and not ok.parse_failed
    assert bad.labels is None and bad.parse_failed and bad.meta["attempts"] == 2


def test_shipped_sets_are_valid_and_disjoint():
    train, evaluation = load_thoughts(TRAIN_FILE), load_thoughts(EVAL_FILE)
    assert len(train) >= 250 and len(evaluation) >= 150
    assert not {x.text.lower() for x in train} & {x.text.lower() for x in evaluation}
    for items in (train, evaluation):
        assert all(any(lab in x.labels for x in items) for lab in distortion_labels())
        assert any(not x.labels for x in items)


def test_a_bad_labels_line_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "I am a loser", "labels": ["labeling"]}\n{"text": "x", "labels": ["gloom"]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'labels'.*gloom"):
        load_thoughts(path)


def _profile(**changes):
    data = load_profiles("bank")[0].to_dict()
    data.update(changes)
    return PatientProfile.from_dict(data, source="test.yaml")


def test_profile_distortions_are_validated_against_the_taxonomy():
    assert _profile(distortions=["mind_reading"]).distortions == ("mind_reading",)
    assert _profile(distortions=[]).distortions == ()
    with pytest.raises(ProfileError, match=r"field 'distortions'.*unknown distortion label.*'doom'") as e:
        _profile(distortions=["doom"])
    assert e.value.field == "distortions"
    with pytest.raises(ProfileError, match="field 'distortions'.*twice"):
        _profile(distortions=["labeling", "labeling"])
    with pytest.raises(ProfileError, match="field 'distortions'.*list"):
        _profile(distortions="labeling")


def test_every_bank_profile_has_one_or_two_distortions():
    assert all(1 <= len(p.distortions) <= 2 for p in load_profiles("bank"))


@pytest.mark.slow
def test_embedded_detector_finds_clear_distortions_and_calibrates(tmp_path):
    detector = make_judge("distortions", "embedded")
    found = detector.detect(["I must always be perfect and I should never need anyone's help.",
                             "I feel like such a failure, so I must really be one.",
                             "it's my fault the whole team lost, I let everyone down", ""])
    assert "should_statements" in found[0].labels
    assert "emotional_reasoning" in found[1].labels
    assert "personalization" in found[2].labels
    assert found[3].labels == ()
    assert all(len(f.labels) <= detector.max_labels for f in found)
    assert 0.1 <= detector.thresholds.min() and detector.thresholds.max() <= 0.9
    data = tmp_path / "thoughts.jsonl"
    data.write_text("".join(json.dumps({"text": t, "labels": lab}) + "\n" for t, lab in [
        ("they all think I'm stupid, I can tell", ["mind_reading"]), ("I'm going to fail tomorrow, I know it", ["fortune_telling"])]))
    report = calibrate("embedded", data, progress=False)
    assert report["kind"] == "distortions" and report["metrics"]["distortions"]["scored"] == 2
