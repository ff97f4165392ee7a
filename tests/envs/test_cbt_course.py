"""CBTCourse-v0 with the rule patient and a scripted therapist: memory across sessions, reproducibility."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import cbtgym  # noqa: F401  (registers the env)
from cbtgym.backends.base import Sampling
from cbtgym.backends.scripted import ScriptedBackend
from cbtgym.patients import CourseMemory, PatientState
from tests.factories import profile, profiles

#: The scripted therapist's turns in every session: feelings, the thought, then homework.
TURNS = ["That sounds hard. How have you been feeling?", "What went through your mind in that moment?",
         "This week, could you write down one situation and the thought that came with it?"]
SUMMARY = "We looked at her worry about work; homework: a thought record."


def therapist() -> ScriptedBackend:
    """Answers the env's observation: the summary after a session, else the next of TURNS for the round."""
    def reply(conv, sampling):
        obs = conv[-1]["content"]
        if "Write a summary" in obs:
            return SUMMARY
        return TURNS[(obs.split("\nPatient:")[-1:] and obs.count("\nTherapist: ") - 1) % len(TURNS)]

    return ScriptedBackend(reply, name="scripted-therapist")


def run_course(env, seed: int, **options):
    backend, steps = therapist(), []
    obs, info = env.reset(seed=seed, options=options or None)
    steps.append((obs, info["stage"], info["session"]))
    openings = []
    done = False
    while not done:
        action = backend.generate([[{"role": "user", "content": obs}]], Sampling())[0]
        obs, reward, done, truncated, info = env.step(action)
        assert not truncated
        steps.append((obs, info["stage"], info["session"]))
        if info["stage"] == "session" and info["round"] == 0:
            openings.append(info["transcript"]["turns"][1]["meta"].get("homework"))
    return steps, info, openings


@pytest.fixture(scope="module")
def env():
    return gym.make("CBTCourse-v0", sessions=3, profiles=profiles(), max_rounds=3, reward_fn="placeholder").unwrapped


def test_three_sessions_remember_homework_and_reached_layers_and_reproduce_under_seed(env):
    steps, info, homework = run_course(env, seed=3, profile_id="t-gad")
    assert [s for _, stage, s in steps if stage == "summary"] == [1, 2] and info["stage"] == "over" and info["session"] == 3
    memory = CourseMemory.from_dict(info["memory"])
    assert memory.sessions == 2 and "thought" in memory.reached and memory.homework.startswith("This week")
    assert info["summaries"] == [SUMMARY, SUMMARY]
    # Every later session opens with the welcome back, the summary on top, and the homework report
    # (the t-gad profile is active: with this seed it did the homework both times).
    assert homework == ["done", "done"]
    openings = [obs for obs, stage, s in steps if stage == "session" and obs.count("\nTherapist: ") == 1 and s > 1]
    assert len(openings) == 2
    for obs in openings:
        assert f"[Your summary of the previous session: {SUMMARY}]" in obs and "Therapist: Welcome back" in obs
        assert obs.split("\nPatient: ")[-1].startswith("I did ")
    # The thought, reached in session 1, stays open: session 2's thought question goes further (nothing re-discloses it).
    session2 = [obs for obs, stage, s in steps if stage == "session" and s == 2][-1]
    assert "I keep thinking" not in session2 and "What goes through my head" not in session2
    assert steps == run_course(env, seed=3, profile_id="t-gad")[0]


def test_homework_done_follows_the_seed_and_attitude_and_memory_checks_its_patient():
    active, passive = (CourseMemory(p.id, p.attitude, seed) for p, seed in ((profile(), 0), (profile(attitude="passive"), 0)))
    done_rate = {}
    for memory in (active, passive):
        outcomes = [CourseMemory(memory.profile_id, memory.attitude, seed).after(_session_with_homework(memory)).homework_done
                    for seed in range(200)]
        done_rate[memory.attitude] = sum(outcomes) / len(outcomes)
    assert done_rate["active"] > 0.65 and done_rate["passive"] < 0.45
    with pytest.raises(ValueError, match="pass each patient its own memory"):
        PatientState.opening(profile("other"), active)


def _session_with_homework(memory: CourseMemory):
    from cbtgym.transcript import Transcript

    t = Transcript(memory.profile_id, memory.attitude)
    t.add("therapist", "Hi.")
    t.add("patient", "Hi.")
    t.add("therapist", "Before we meet again, try a small experiment.")
    return t


def test_course_env_passes_check_env(env):
    check_env(env, skip_render_check=True)
