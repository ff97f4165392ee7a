"""The profile bank written for cbtgym and its fixed train/test split."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cbtgym.profiles import RISK_FLAGS, PatientProfile, load_profiles, load_split, split_ids
from cbtgym.profiles.loaders import BANK_FILE, SPLIT_FILE


@pytest.fixture(scope="module")
def bank() -> list[PatientProfile]:
    return load_profiles("bank")


def test_bank_size_and_coverage(bank):
    assert len(bank) >= 64
    assert len({p.disorder for p in bank}) >= 10
    attitudes = Counter(p.attitude for p in bank)
    assert set(attitudes) == {"active", "passive"}
    # "roughly half" each: neither attitude below 40 %.
    assert min(attitudes.values()) >= 0.4 * len(bank)
    assert all(p.source == "bank" for p in bank)


def test_bank_ids_unique_and_named_by_presentation(bank):
    ids = [p.id for p in bank]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("bank-") for i in ids)


def test_every_profile_is_complete(bank):
    for p in bank:
        assert p.automatic_thoughts, p.id
        assert 1 <= len(p.reactions) <= 3, p.id
        assert 1 <= len(p.automatic_thoughts) <= 2, p.id
        assert p.core_belief, p.id
        assert 2 <= len(p.emotions) <= 3, p.id
        assert p.persona.name and 16 <= p.persona.age <= 80, p.id
        # Two to four sentences (counted by sentence-ending punctuation).
        assert 2 <= sum(p.disorder_description.count(c) for c in ".!?") <= 4, p.id


def test_personas_vary(bank):
    assert len({p.persona.gender for p in bank}) >= 3
    assert len({p.persona.occupation for p in bank}) >= 0.9 * len(bank)
    ages = [p.persona.age for p in bank]
    assert min(ages) <= 20 and max(ages) >= 70


def test_crisis_profiles(bank):
    crisis = [p for p in bank if p.is_crisis]
    assert len(crisis) >= 6
    flags = Counter(f for p in crisis for f in p.risk_flags)
    assert flags["suicidal_ideation"] >= 2
    for flag in ("self_harm", "psychosis", "mania", "means_request"):
        assert flags[flag] >= 1, flag
    assert flags["harm_to_others"] + flags["abuse"] >= 1
    assert set(flags) <= set(RISK_FLAGS)


def test_split_is_disjoint_and_covers_the_bank(bank):
    split = split_ids()
    train, test = set(split["train"]), set(split["test"])
    assert not train & test
    assert train | test == {p.id for p in bank}
    assert len(split["train"]) == len(train) and len(split["test"]) == len(test)
    assert 0.2 <= len(test) / len(bank) <= 0.3


def test_split_is_stratified(bank):
    by_id = {p.id: p for p in bank}
    test = [by_id[i] for i in split_ids()["test"]]
    train = [by_id[i] for i in split_ids()["train"]]
    assert {p.disorder for p in test} == {p.disorder for p in bank}
    assert {p.attitude for p in test} == {"active", "passive"}
    assert any(p.is_crisis for p in test) and any(p.is_crisis for p in train)


def test_bank_split_sources_load_the_split(bank):
    split = split_ids()
    for name in ("train", "test"):
        loaded = load_profiles(f"bank:{name}")
        assert sorted(p.id for p in loaded) == sorted(split[name])
        assert [p.id for p in load_split(name)] == [p.id for p in loaded]


def test_unknown_split_name_is_an_error():
    with pytest.raises(ValueError, match="bank:train"):
        load_profiles("bank:validation")


def test_split_file_is_plain_json():
    data = json.loads(SPLIT_FILE.read_text())
    assert set(data) == {"train", "test"}
    assert BANK_FILE.name == "profiles.yaml"
