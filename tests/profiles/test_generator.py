"""The LLM profile generator: batching, tolerant parsing, retries, and failures that are reported."""

from __future__ import annotations

import json

import pytest

from cbtgym.backends.base import Sampling
from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.profiles import PatientProfile, Persona, load_profiles
from cbtgym.profiles.generator import (
    PROFILE_JSON_SCHEMA,
    ProfileGenerator,
    ProfileRequest,
    parse_generated,
    render_request,
    requests_from_profiles,
)


def reply(**overrides) -> str:
    data = {
        "disorder_description": "He worries about his shop all day. He cannot switch off at night.",
        "situation": "I saw that a new supermarket is opening across the road.",
        "reactions": ["I went through the accounts until two in the morning."],
        "automatic_thoughts": ["The shop will close and I will have let my family down."],
        "core_belief": "I am a failure.",
        "emotions": ["anxious", "ashamed"],
    }
    data.update(overrides)
    return json.dumps(data)


REQUESTS = [
    ProfileRequest(Persona(52, "male", "shopkeeper", "Omar"), "GAD"),
    ProfileRequest(Persona(23, "female", "nursing student"), "panic disorder", attitude="passive"),
    ProfileRequest(Persona(67, "non-binary", "retired bus driver"), "insomnia", id="my-id"),
]


def by_occupation(texts: dict[str, str]):
    """A backend reply function: the text for the first occupation named in the prompt."""

    def fn(conv, sampling):
        prompt = conv[-1]["content"]
        return next(text for occupation, text in texts.items() if f"Occupation: {occupation}" in prompt)

    return fn


def test_valid_json_for_every_request_in_one_call():
    backend = ScriptedBackend([reply()])
    report = ProfileGenerator(backend).generate(REQUESTS)
    assert report.ok and backend.stats.calls == 1 and backend.stats.conversations == 3
    assert report.attempts == [1, 1, 1]
    assert [p.id for p in report.profiles] == ["gen-gad-01", "gen-panic-disorder-02", "my-id"]
    first, second, _ = report.profiles
    assert first.persona == REQUESTS[0].persona and first.disorder == "GAD" and first.source == "generated"
    assert second.attitude == "passive" and second.persona.name is None
    assert first.automatic_thoughts == ("The shop will close and I will have let my family down.",)
    assert first.core_belief == "I am a failure." and first.emotions == ("anxious", "ashamed")


def test_prompt_carries_the_persona_and_the_json_schema_is_requested():
    seen = []

    def fn(conv, sampling):
        seen.append((conv, sampling))
        return reply()

    ProfileGenerator(ScriptedBackend(fn)).generate(REQUESTS[:1])
    [(conv, sampling)] = seen
    prompt = conv[-1]["content"]
    for part in ("Omar", "52", "male", "shopkeeper", "GAD", '"automatic_thoughts"'):
        assert part in prompt
    assert "$" not in prompt  # every placeholder filled
    assert sampling.json_schema == PROFILE_JSON_SCHEMA
    assert prompt == render_request(REQUESTS[0])


def test_own_sampling_keeps_its_settings_and_gains_the_schema():
    seen = []
    backend = ScriptedBackend(lambda conv, s: seen.append(s) or reply())
    ProfileGenerator(backend, sampling=Sampling(max_new_tokens=50, temperature=0.3, seed=7)).generate(REQUESTS[:1])
    assert (seen[0].max_new_tokens, seen[0].temperature, seen[0].seed) == (50, 0.3, 7)
    assert seen[0].json_schema == PROFILE_JSON_SCHEMA


def test_fenced_json_with_prose_and_aliases_is_parsed():
    text = "Here is the profile:\n```json\n" + reply(reaction="I froze.").replace('"reactions"', '"unused"') + "\n```\nHope it helps!"
    # The alias "reaction" stands for "reactions"; the stray "unused" key is ignored.
    profile = parse_generated(text, REQUESTS[0], "p1")
    assert profile.reactions == ("I froze.",)


def test_garbage_is_retried_then_reported_with_every_raw_text():
    replies = {"shopkeeper": reply(), "nursing student": "I'm sorry, I can't help with that.", "retired bus driver": reply()}
    backend = ScriptedBackend(by_occupation(replies))
    report = ProfileGenerator(backend, max_attempts=3).generate(REQUESTS)
    assert [p.id for p in report.profiles] == ["gen-gad-01", "my-id"]
    [failure] = report.failures
    assert failure.profile_id == "gen-panic-disorder-02" and failure.request == REQUESTS[1]
    assert failure.raw == ["I'm sorry, I can't help with that."] * 3 and failure.attempts == 3
    assert all("no JSON object" in e for e in failure.errors)
    # Retries are batched too: 3 conversations, then only the failed one, twice.
    assert backend.stats.calls == 3 and backend.stats.conversations == 5
    assert report.attempts == [1, 3, 1] and not report.ok


def test_a_retry_that_succeeds_is_kept():
    # Greedy first attempt gives garbage; retries sample (with a new seed) and give valid JSON.
    backend = ScriptedBackend(lambda conv, s: "not json" if s.greedy else reply())
    report = ProfileGenerator(backend, sampling=Sampling(max_new_tokens=300)).generate(REQUESTS[:2])
    assert report.ok and report.attempts == [2, 2] and backend.stats.calls == 2


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (reply(automatic_thoughts=[]), "automatic_thoughts"),
        (reply(reactions=5), "reactions"),
        (json.dumps({"situation": "I lost my keys."}), "disorder_description"),
        (reply(situation="<one sentence in the first person>"), "situation"),
        (reply(automatic_thoughts=["If I make one mistake, my boss will see I'm a fraud."]), "automatic_thoughts"),
    ],
)
def test_schema_invalid_reply_is_a_failure_naming_the_field(text, field):
    report = ProfileGenerator(ScriptedBackend([text]), max_attempts=2).generate(REQUESTS[:1])
    assert not report.profiles
    [failure] = report.failures
    assert failure.raw == [text, text]
    assert f"field '{field}'" in failure.errors[-1] and "'gen-gad-01'" in failure.errors[-1]


def test_bad_requests_are_rejected_up_front():
    with pytest.raises(ValueError, match="unique"):
        ProfileGenerator(ScriptedBackend([reply()])).generate([REQUESTS[2], REQUESTS[2]])
    with pytest.raises(ValueError, match="attitude"):
        ProfileRequest(Persona(30, "f", "x"), "GAD", attitude="hostile")
    with pytest.raises(ValueError, match="max_attempts"):
        ProfileGenerator(ScriptedBackend([reply()]), max_attempts=0)


def test_generated_profiles_save_and_load(tmp_path):
    from cbtgym.profiles import save_profiles

    report = ProfileGenerator(ScriptedBackend([reply()])).generate(REQUESTS)
    path = save_profiles(report.profiles, tmp_path / "generated.jsonl")
    assert load_profiles(path) == report.profiles


def test_requests_from_profiles_reuse_persona_and_disorder():
    bank = load_profiles("bank:test")[:2]
    requests = requests_from_profiles(bank)
    assert [(r.persona, r.disorder, r.attitude, r.id) for r in requests] == [
        (p.persona, p.disorder, p.attitude, f"{p.id}-gen") for p in bank
    ]


@pytest.mark.slow
def test_embedded_model_generation_reports_failures_without_crashing(embedded_hf):
    """SmolLM2-135M rarely writes a valid profile; whatever it writes must be a profile or a reported failure.

    One request and a short budget keep this cheap: the test is about the failure path, not quality.
    """
    gen = ProfileGenerator(embedded_hf, sampling=Sampling(max_new_tokens=96, temperature=0.7, seed=0), max_attempts=2)
    calls_before = embedded_hf.stats.calls
    report = gen.generate(REQUESTS[:1])
    assert len(report.profiles) + len(report.failures) == 1
    assert all(isinstance(p, PatientProfile) and p.source == "generated" for p in report.profiles)
    for failure in report.failures:
        assert failure.attempts == 2 and len(failure.errors) == 2
        assert all(isinstance(t, str) and t.strip() for t in failure.raw)
        assert all("gen-gad-01" in e for e in failure.errors)
    assert embedded_hf.stats.calls - calls_before == report.attempts[0]
