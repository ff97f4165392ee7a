"""Resume only with the settings that wrote a file: a changed setting refuses, naming it; the same
settings resume byte-identically (``cbtgym simulate``, ``collect_candidates``, the DPO eval files)."""

from __future__ import annotations

import json

import pytest

from cbtgym.backends import Sampling, ScriptedBackend
from cbtgym.cli import main
from cbtgym.jsonl import JsonlWriter
from cbtgym.patients.llm_patient import LLMPatient
from cbtgym.resume import ResumeMismatch, check_resume, fingerprint, settings_value, sidecar_path
from cbtgym.rollout import EpisodeSpec
from cbtgym.therapists import PromptTherapist
from cbtgym.training.evaluation import evaluate
from cbtgym.training.preferences import collect_candidates
from tests.factories import profiles

QUESTIONS = ["What went through your mind?", "That sounds hard. How did you feel?", "Okay.", "You should relax."]


# --------------------------------------------------------------------------- the library piece


def test_settings_sidecar_is_written_first_and_compared_on_resume(tmp_path):
    out = tmp_path / "runs.jsonl"
    settings = {"backend": ScriptedBackend(name="policy-a"), "rounds": 4, "sampling": Sampling(temperature=1.0)}
    assert check_resume(out, settings) is False
    side = json.loads(sidecar_path(out).read_text())
    assert side["settings"] == {"backend": "policy-a", "rounds": 4, "sampling": Sampling(temperature=1.0).cache_key()}
    assert side["fingerprint"] == fingerprint(settings)
    with JsonlWriter(out) as w:
        w.write({"key": "a"})
    assert check_resume(out, {"rounds": 4, "sampling": Sampling(temperature=1.0), "backend": ScriptedBackend(name="policy-a")})

    changed = {**settings, "rounds": 6, "backend": ScriptedBackend(name="policy-b")}
    with pytest.raises(ResumeMismatch) as err:
        check_resume(out, changed)
    assert err.value.differences == {"backend": ("policy-a", "policy-b"), "rounds": (4, 6)}
    message = str(err.value)
    assert "backend: 'policy-a' -> 'policy-b'" in message and "rounds: 4 -> 6" in message and "fresh=True" in message
    assert out.read_text() == '{"key": "a"}\n'  # a refusal touches nothing

    assert check_resume(out, changed, fresh=True) is False
    assert not out.exists() and out.with_name("runs.jsonl.bak").read_text() == '{"key": "a"}\n'
    assert json.loads(sidecar_path(out).read_text())["settings"]["rounds"] == 6


def test_a_file_without_settings_is_not_taken_for_a_resume(tmp_path):
    out = tmp_path / "old.jsonl"
    out.write_text('{"key": "a"}\n')
    with pytest.raises(ResumeMismatch, match="settings file"):
        check_resume(out, {"rounds": 4})


def test_secrets_never_enter_the_sidecar(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-abcdefgh12345678")
    with pytest.raises(ValueError, match="'judge.url'"):
        check_resume(tmp_path / "x.jsonl", {"judge": {"url": "https://h/v1?key=sk-abcdefgh12345678"}})
    assert not sidecar_path(tmp_path / "x.jsonl").exists()


def test_settings_values_are_stable_and_leave_state_out():
    class Reward:
        def __init__(self, mode: str) -> None:
            self.mode, self.calls = mode, 0

    a, b = Reward("turn"), Reward("turn")
    b.calls = 17  # a counter is state, not a setting
    assert settings_value(a) == settings_value(b)
    assert settings_value(Reward("end")) != settings_value(a)
    patient = LLMPatient.configured(ScriptedBackend(name="patient-model"), 32, 0.7, "end")
    value = settings_value(patient)
    assert value["backend"] == "patient-model" and value["sampling"]["temperature"] == 0.7
    long_prompt = "You are a therapist. " * 40
    assert settings_value(long_prompt).startswith("sha256:")
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": (1, 2), "a": 1})


# --------------------------------------------------------------------------- cbtgym simulate


def simulate(out, *extra: str) -> list[str]:
    """The argv of a small simulate run; argparse keeps the last of a repeated flag, so ``extra`` overrides."""
    return ["simulate", "--therapist-backend", "scripted", "--episodes", "3", "--rounds", "2", "--batch-size", "1",
            "--reward", "placeholder", "--out", str(out), *extra]


@pytest.mark.parametrize("change, named", [
    (["--rounds", "3"], "rounds: 2 -> 3"),
    (["--profiles", "bank:train"], "profiles: 'bank:test' -> 'bank:train'"),
    (["--therapist-prompt", "brief"], "therapist_prompt: 'llm4cbt' -> 'brief'"),
    (["--reward", "rubric"], "reward: 'placeholder' -> 'rubric'"),
    (["--therapist-backend", "openai:http://127.0.0.1:9/v1?key=abc#m"], "therapist_backend: 'scripted' -> 'openai:http://127.0.0.1:9/v1#m'"),
])
def test_simulate_refuses_to_resume_with_a_changed_setting(tmp_path, capsys, change, named):
    out = tmp_path / "episodes.jsonl"
    assert main(simulate(out)) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(simulate(out, *change)) == 2
    err = capsys.readouterr().err
    assert named in err and "--fresh" in err and len(err.strip().splitlines()) == 1
    assert "key=abc" not in err and "key=abc" not in sidecar_path(out).read_text()
    assert out.read_bytes() == before


def test_simulate_resumes_byte_identically_and_fresh_starts_over(tmp_path, capsys):
    full, resumed = tmp_path / "full.jsonl", tmp_path / "resumed.jsonl"
    assert main(simulate(full)) == 0
    assert main(simulate(resumed, "--episodes", "1")) == 0  # as a run killed after its first episode
    assert main(simulate(resumed)) == 0
    assert resumed.read_bytes() == full.read_bytes()
    capsys.readouterr()
    assert main(simulate(full, "--rounds", "1", "--fresh")) == 0
    assert full.with_name("full.jsonl.bak").read_bytes() == resumed.read_bytes()
    assert all(len(json.loads(line)["rewards"]) == 1 for line in full.read_text().splitlines())


# --------------------------------------------------------------------------- DPO candidates and eval files


def zero_reward(transcripts, profiles, done):
    from cbtgym.envs.reward import StepReward

    return [StepReward(0.0) for _ in transcripts]


def collect(out, k=4, n=3, prompt="system"):
    specs = [EpisodeSpec(seed=i) for i in range(n)]
    return collect_candidates(ScriptedBackend(QUESTIONS, name="toy-policy"), prompt, specs, out, k=k,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0, seed=0), batch_size=1,
                              profiles=profiles(), max_rounds=2, reward_fn=zero_reward)


def test_candidates_resume_only_with_their_settings(tmp_path):
    full = collect(tmp_path / "full")
    collect(tmp_path / "resumed", n=1)
    resumed = collect(tmp_path / "resumed")
    assert resumed.read_bytes() == full.read_bytes()
    with pytest.raises(ResumeMismatch, match="k: 4 -> 3"):
        collect(tmp_path / "full", k=3)
    with pytest.raises(ResumeMismatch, match="system_prompt: 'system' -> 'another'"):
        collect(tmp_path / "full", prompt="another")


def test_eval_files_resume_only_with_their_settings(tmp_path):
    specs = [EpisodeSpec(seed=0, profile_id=p.id) for p in profiles()[:2]]
    out = tmp_path / "eval_before.jsonl"

    def run(name="base", rounds=2, todo=specs):
        therapist = PromptTherapist(ScriptedBackend(QUESTIONS, name=name), "brief", Sampling(max_new_tokens=8))
        return evaluate(therapist, todo, out, batch_size=1, profiles=profiles(), max_rounds=rounds, reward_fn=zero_reward)

    run(todo=specs[:1])
    assert len(run()) == 2
    with pytest.raises(ResumeMismatch, match="therapist.backend: 'base' -> 'trained'"):
        run(name="trained")
    with pytest.raises(ResumeMismatch, match="env.max_rounds: 2 -> 3"):
        run(rounds=3)
