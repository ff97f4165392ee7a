"""Loading profiles from files, directories and LLM4CBT personas; every error names file, id and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cbtgym.profiles import PatientProfile, ProfileError, load_profiles, save_profiles
from cbtgym.profiles.loaders import SHARED_ENV


def record(pid: str = "t-01", **overrides) -> dict:
    data = {
        "id": pid,
        "persona": {"age": 30, "gender": "female", "occupation": "teacher", "name": "Ana"},
        "disorder": "GAD",
        "disorder_description": "She worries about work every evening. It keeps her awake.",
        "situation": "I have an inspection next week.",
        "reactions": ["I rewrote my lesson plans three times."],
        "automatic_thoughts": ["If they see one bad lesson, they will decide I cannot teach."],
        "core_belief": "I am incompetent.",
        "emotions": ["anxious", "tense"],
        "attitude": "active",
    }
    data.update(overrides)
    return data


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def assert_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in error message: {message}"


# ----------------------------------------------------------------------------- good files


def test_yaml_list_single_mapping_and_profiles_key(tmp_path):
    a = load_profiles(write_yaml(tmp_path / "list.yaml", [record("a"), record("b", attitude="passive")]))
    b = load_profiles(write_yaml(tmp_path / "one.yml", record("c")))
    c = load_profiles(write_yaml(tmp_path / "wrapped.yaml", {"profiles": [record("d")]}))
    assert [p.id for p in a] == ["a", "b"] and a[1].attitude == "passive"
    assert [p.id for p in b] == ["c"] and [p.id for p in c] == ["d"]
    assert a[0].source == str(tmp_path / "list.yaml")


def test_jsonl_and_directory_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [record("x2"), record("x3")])
    write_yaml(tmp_path / "a.yaml", [record("x1")])
    (tmp_path / "notes.txt").write_text("not a profile file")
    assert [p.id for p in load_profiles(tmp_path)] == ["x1", "x2", "x3"]


@pytest.mark.parametrize("suffix", [".jsonl", ".yaml"])
def test_save_and_load_round_trip(tmp_path, suffix):
    bank = load_profiles("bank:test")
    path = save_profiles(bank, tmp_path / f"out{suffix}")
    assert load_profiles(path) == bank


def test_attitude_argument_overrides_or_doubles(tmp_path):
    path = write_yaml(tmp_path / "p.yaml", [record("a", attitude="active"), record("b", attitude="passive")])
    assert [p.attitude for p in load_profiles(path)] == ["active", "passive"]
    assert [p.attitude for p in load_profiles(path, attitude="passive")] == ["passive", "passive"]
    both = load_profiles(path, attitude="both")
    assert [(p.id, p.attitude) for p in both] == [
        ("a-active", "active"), ("a-passive", "passive"), ("b-active", "active"), ("b-passive", "passive"),
    ]
    with pytest.raises(ValueError, match="attitude"):
        load_profiles(path, attitude="angry")


def test_missing_path_explains_the_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="'bank:train'"):
        load_profiles(tmp_path / "nope.yaml")


# ----------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"situation": None}, "situation"),  # missing field
        ({"automatic_thoughts": []}, "automatic_thoughts"),  # empty list
        ({"reactions": 5}, "reactions"),  # wrong type
        ({"persona": {"age": "forty", "gender": "f", "occupation": "x"}}, "persona.age"),  # wrong type
        ({"attitude": "hostile"}, "attitude"),  # bad attitude
        ({"risk_flags": ["sadness"]}, "risk_flags"),  # bad risk flag
        ({"mood": "low"}, "mood"),  # unknown field
    ],
)
@pytest.mark.parametrize("suffix", [".yaml", ".jsonl"])
def test_invalid_profile_names_file_id_and_field(tmp_path, overrides, field, suffix):
    bad = record("bad-1", **overrides)
    if overrides.get("situation", "") is None:
        del bad["situation"]
    good = record("good-1")
    path = tmp_path / f"profiles{suffix}"
    write_yaml(path, [good, bad]) if suffix == ".yaml" else write_jsonl(path, [good, bad])
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, str(path), "'bad-1'", f"field '{field}'")
    assert err.value.profile_id == "bad-1" and err.value.field == field


def test_profile_without_id_is_named_by_line_and_position(tmp_path):
    bad = record()
    del bad["id"]
    path = write_yaml(tmp_path / "p.yaml", [record("ok"), bad])
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("- ") and i > 1)
    assert_names(err, f"{path}:{line}", "profile #2", "field 'id'")

    path = write_jsonl(tmp_path / "p.jsonl", [record("ok"), bad])
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, f"{path}:2", "field 'id'")


def test_duplicate_ids_name_both_places(tmp_path):
    write_yaml(tmp_path / "a.yaml", [record("dup")])
    write_jsonl(tmp_path / "b.jsonl", [record("other"), record("dup")])
    with pytest.raises(ProfileError) as err:
        load_profiles(tmp_path)
    assert_names(err, str(tmp_path / "a.yaml"), f"{tmp_path / 'b.jsonl'}:2", "'dup'", "field 'id'", "duplicate")


def test_broken_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- id: a\n  persona: {age: 30, gender: f\n  disorder: GAD\n")
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, str(path), "invalid YAML", "line 3")


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(record("a")) + "\n{not json\n" + json.dumps(record("b")) + "\n")
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, f"{path}:2", "not valid JSON")


@pytest.mark.parametrize("content", ["", "42\n", "[]\n", "profiles: {id: a}\n"])
def test_files_without_profiles_are_errors(tmp_path, content):
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, str(path))


def test_directory_without_profile_files_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match="no profile files"):
        load_profiles(tmp_path)


# ----------------------------------------------------------------------------- LLM4CBT personas


def llm4cbt_persona(**input_overrides) -> dict:
    """A persona in the LLM4CBT file format (invented text, for format tests)."""
    block = {
        "AUTOMATIC_THOUGHT": "If I forget a line, the audience will laugh at me.",
        "DESCRIPTION": "A singer dreads her first solo. She sleeps badly all week.",
        "PATIENT_AGE": "29",
        "PATIENT_GENDER": "Female",
        "PATIENT_OCCUPATION": "Singer",
        "REACTION": "I practise until my voice is hoarse.",
        "SITUATION": "I have my first solo concert on Saturday.",
        "SYMPTOM": "social anxiety",
    }
    block.update(input_overrides)
    return {"API_input": {"model": "none"}, "Input": block, "Story": "It was the night before the concert.", "Summary": "x"}


def test_llm4cbt_format_is_detected_and_mapped(tmp_path):
    path = write_yaml(tmp_path / "patient-SOC-v1.yml", llm4cbt_persona())
    [p] = load_profiles(path)
    assert p.id == "llm4cbt-patient-SOC-v1" and p.source == "llm4cbt"
    assert (p.persona.age, p.persona.gender, p.persona.occupation) == (29, "Female", "Singer")
    assert p.disorder == "social anxiety"
    assert p.automatic_thoughts == ("If I forget a line, the audience will laugh at me.",)
    assert p.reactions == ("I practise until my voice is hoarse.",)
    assert p.background == "It was the night before the concert."
    assert p.core_belief is None and p.attitude == "active"


@pytest.mark.parametrize(("overrides", "field"), [({"REACTION": None}, "Input.REACTION"), ({"PATIENT_AGE": "old"}, "Input.PATIENT_AGE")])
def test_llm4cbt_errors_name_the_files_key(tmp_path, overrides, field):
    path = write_yaml(tmp_path / "patient-X-v1.yml", llm4cbt_persona(**overrides))
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, str(path), "'llm4cbt-patient-X-v1'", f"field '{field}'")


def test_llm4cbt_personas_from_shared(shared_dir, monkeypatch):
    folder = shared_dir / "data" / "llm4cbt-personas"
    monkeypatch.setenv(SHARED_ENV, str(shared_dir))
    profiles = load_profiles("llm4cbt")
    assert len(profiles) == 9
    assert {p.disorder for p in profiles} == {"GAD", "OCD", "PTSD"}
    assert all(p.source == "llm4cbt" and p.core_belief is None and p.attitude == "active" for p in profiles)
    assert [p.id for p in profiles] == [f"llm4cbt-{f.stem}" for f in sorted(folder.glob("*.yml"))]
    # Field by field against the file itself (read here, never copied into the repo).
    raw = yaml.safe_load((folder / "patient-GAD-v1.yml").read_text())
    p = next(p for p in profiles if p.id == "llm4cbt-patient-GAD-v1")
    assert p.automatic_thoughts == (raw["Input"]["AUTOMATIC_THOUGHT"].strip(),)
    assert p.situation == raw["Input"]["SITUATION"].strip()
    assert p.disorder_description == raw["Input"]["DESCRIPTION"].strip()
    assert p.persona.age == int(raw["Input"]["PATIENT_AGE"])
    assert p.background == raw["Story"].strip()
    assert load_profiles(folder) == profiles


def test_llm4cbt_both_attitudes(shared_dir):
    both = load_profiles(shared_dir / "data" / "llm4cbt-personas", attitude="both")
    assert len(both) == 18
    assert both[0].id == "llm4cbt-patient-GAD-v1-active" and both[1].id == "llm4cbt-patient-GAD-v1-passive"
    assert [p.attitude for p in both[:2]] == ["active", "passive"]


def test_llm4cbt_absent_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(SHARED_ENV, str(tmp_path / "no-shared"))
    with pytest.raises(FileNotFoundError, match="no-shared"):
        load_profiles("llm4cbt")
    # Unset, the loader does not go looking for ../shared beside the package: it says what to set.
    monkeypatch.delenv(SHARED_ENV)
    with pytest.raises(FileNotFoundError, match=f"{SHARED_ENV} is not set"):
        load_profiles("llm4cbt")


def test_repeated_keys_are_errors_naming_the_file_and_line(tmp_path):
    yml = tmp_path / "p.yaml"
    yml.write_text(yaml.safe_dump([record("t-01")], sort_keys=False) + "  situation: again\n", encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profiles(yml)
    assert_names(err, str(yml), "'situation'", "twice")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps(record("t-01"))[:-1] + ', "disorder": "OCD"}\n', encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profiles(jsonl)
    assert_names(err, f"{jsonl}:1", "'disorder'", "twice")


@pytest.mark.parametrize("age", [3.5, 40.0, "forty", True, "3.5", None])
def test_a_non_integer_age_is_an_error_naming_file_profile_and_field(tmp_path, age):
    rec = record("t-age")
    rec["persona"]["age"] = age
    path = write_yaml(tmp_path / "ages.yaml", [rec])
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, str(path), "'t-age'", "field 'persona.age'", "whole number")


def test_validate_profiles_shows_a_bad_age_in_one_line(tmp_path, capsys):
    from cbtgym.cli import main

    rec = record("t-age")
    rec["persona"]["age"] = 3.5
    path = write_yaml(tmp_path / "ages.yaml", [rec])
    assert main(["validate-profiles", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'t-age'" in err and "persona.age" in err and "3.5" in err


def test_loaded_profiles_are_patient_profiles():
    assert all(isinstance(p, PatientProfile) for p in load_profiles("bank:train"))


def test_an_over_long_profile_field_is_an_error_naming_it(tmp_path):
    from cbtgym.jsonl import MAX_UTTERANCE_CHARS

    path = write_jsonl(tmp_path / "long.jsonl", [record("t-long", situation="I worry. " * 120_000)])
    with pytest.raises(ProfileError) as err:
        load_profiles(path)
    assert_names(err, f"{path}:1", "'t-long'", "field 'situation'", str(MAX_UTTERANCE_CHARS))
    path = write_jsonl(tmp_path / "long2.jsonl", [record("t-long2", reactions=["ok", "x" * (MAX_UTTERANCE_CHARS + 1)])])
    with pytest.raises(ProfileError, match="field 'reactions'"):
        load_profiles(path)
