import pickle

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import cbtgym  # noqa: F401  (registers the env)
from cbtgym.envs import CBTSessionEnv, CBTSessionVectorEnv
from tests.factories import echo_patient_backend, profiles

ACTIONS = [
    "That sounds really hard. How have you been feeling about it?",
    "What happened the last time it came up?",
    "What went through your mind in that moment?",
    "If that were true, what would it mean about you?",
    "What else did you notice?",
]


def registered_ids():
    return [i for i in gym.registry if i.startswith("CBTSession")]


@pytest.mark.parametrize("env_id", registered_ids())
def test_registered_env_passes_check_env_and_pickles(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=1)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.transcript.to_dict() == env.unwrapped.transcript.to_dict()


def test_zero_argument_env_runs_a_full_episode_offline():
    env = gym.make("CBTSession-v0")
    obs, info = env.reset(seed=0)
    assert obs.startswith("Therapist: Hi, nice to see you today. How have you been?\nPatient: ")
    assert info["profile_id"] and info["transcript"]["turns"][0]["speaker"] == "therapist"
    steps, done = 0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(ACTIONS[steps])
        assert isinstance(reward, float)
        assert env.observation_space.contains(obs)
        steps += 1
        done = terminated or truncated
    assert steps == 4 and truncated and not terminated  # LLM4CBT's 4 rounds
    assert info["transcript"]["ended_by"] == "budget"
    assert "reward_components" in info
    with pytest.raises(RuntimeError, match="reset"):
        env.step("one more?")


def rollout(env, seed, actions=ACTIONS[:4]):
    env.reset(seed=seed)
    for a in actions:
        *_, te, tr, info = env.step(a)
        if te or tr:
            break
    return env.unwrapped.transcript.to_dict()


def test_same_seed_reproduces_the_episode_with_a_deterministic_backend():
    make = lambda: gym.make("CBTSession-v0", profiles=profiles(), patient_backend=echo_patient_backend(),
                            reward_fn="placeholder")
    a, b = rollout(make(), 7), rollout(make(), 7)
    assert a == b
    drawn = {rollout(make(), s)["profile_id"] for s in range(12)}
    assert len(drawn) > 1, "seeds should draw different profiles"


def test_vector_env_matches_sequential_envs_with_one_backend_call_per_step():
    n = 5
    backend = echo_patient_backend()
    venv = gym.make_vec("CBTSession-v0", num_envs=n, vectorization_mode="vector_entry_point", profiles=profiles(),
                        patient_backend=backend, rate_satisfaction=False, reward_fn="placeholder")
    assert isinstance(venv.unwrapped, CBTSessionVectorEnv)
    venv.reset(seed=100)
    assert backend.stats.calls == 1
    for k, a in enumerate(ACTIONS[:4]):
        venv.step([f"{a} ({i})" for i in range(n)])
        assert backend.stats.calls == k + 2
    batched = [t.to_dict() for t in venv.unwrapped.transcripts]

    sequential = []
    for i in range(n):
        env = CBTSessionEnv(profiles=profiles(), patient_backend=echo_patient_backend(), rate_satisfaction=False,
                            reward_fn="placeholder")
        sequential.append(rollout(env, 100 + i, [f"{a} ({i})" for a in ACTIONS[:4]]))
    assert batched == sequential


def test_vector_env_with_ratings_makes_two_calls_per_step_and_records_satisfaction():
    backend = echo_patient_backend()
    venv = CBTSessionVectorEnv(3, profiles=profiles(), patient_backend=backend, reward_fn="placeholder")
    venv.reset(seed=0)
    venv.step(ACTIONS[:3])
    assert backend.stats.calls == 4
    for t in venv.transcripts:
        assert all(isinstance(turn.satisfaction, int) for turn in t.patient_turns)


def test_ratings_at_the_end_come_once_after_the_last_round():
    backend = echo_patient_backend()
    venv = CBTSessionVectorEnv(3, profiles=profiles(), patient_backend=backend, reward_fn="placeholder",
                               rate_satisfaction="end", max_rounds=2)
    venv.reset(seed=0)
    venv.step(ACTIONS[:3])
    assert backend.stats.calls == 2  # opening and round 1: replies only
    venv.step(ACTIONS[:3])
    assert backend.stats.calls == 4 and venv.done.all()  # round 2 is the last: replies, then one batched rating
    for t in venv.transcripts:
        assert [turn.satisfaction is not None for turn in t.patient_turns] == [False, False, True]
    with pytest.raises(ValueError, match="rate_satisfaction"):
        CBTSessionEnv(profiles=profiles(), patient_backend=backend, rate_satisfaction="sometimes")


def test_therapist_closing_terminates_and_budgets_truncate():
    env = CBTSessionEnv(profiles=profiles(), reward_fn="placeholder", max_rounds=None, max_words=80)
    env.reset(seed=0)
    *_, terminated, truncated, info = env.step("Thank you, let's end here for today.")
    assert terminated and not truncated and info["transcript"]["ended_by"] == "therapist"
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        *_, terminated, truncated, info = env.step("Could you tell me more about what happened, in as much detail as you like?")
        done, steps = terminated or truncated, steps + 1
    assert truncated and not terminated and env.transcript.words >= 80 and steps < 10


def test_pressing_a_passive_patient_makes_it_leave():
    env = CBTSessionEnv(profiles=profiles(), reward_fn="placeholder", max_rounds=10)
    env.reset(options={"profile_id": "t-gad-p"})
    _, _, terminated, _, info = env.step("You need to stop worrying so much.")
    assert not terminated and "want to get into" in env.transcript.turns[-1].text or "not do this" in env.transcript.turns[-1].text
    _, _, terminated, truncated, info = env.step("Come on, just relax and answer me.")
    assert terminated and not truncated and info["transcript"]["ended_by"] == "patient"


def test_reset_options_choose_profile_and_attitude_and_reject_unknown():
    env = CBTSessionEnv(profiles=profiles(), reward_fn="placeholder")
    _, info = env.reset(options={"profile_id": "t-ocd", "attitude": "passive"})
    assert info["profile_id"] == "t-ocd" and info["attitude"] == "passive"
    with pytest.raises(ValueError, match="profile_id"):
        env.reset(options={"profile_id": "nope"})
    with pytest.raises(ValueError, match="accepts"):
        env.reset(options={"profil_id": "t-ocd"})


def test_non_ascii_actions_are_mapped_into_the_text_space():
    env = CBTSessionEnv(profiles=profiles(), reward_fn="placeholder")
    env.reset(seed=0)
    obs, *_ = env.step("What\u2019s going through your mind \u2014 right now? \U0001F642 caf\u00e9")
    assert env.observation_space.contains(obs)
    assert "What's going through your mind - right now?  cafe" in obs
    with pytest.raises(TypeError, match="action must be"):
        env.step(42)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="attitude"):
        CBTSessionEnv(profiles=profiles(), attitude="angry")
    with pytest.raises(ValueError, match="patient_backend"):
        CBTSessionEnv(profiles=profiles(), patient="llm")
    with pytest.raises(ValueError, match="reward_fn"):
        CBTSessionEnv(profiles=profiles(), reward_fn="ctrs-please")


def test_crisis_opening_starts_in_a_crisis_state_once():
    """The patient's first reply carries its risk statement; its first disclosure does not say it again."""
    from cbtgym.patients.rule_patient import risk_statements

    statement = risk_statements()["suicidal_ideation"]
    env = CBTSessionEnv(profiles=profiles(), reward_fn="placeholder", max_rounds=6)
    env.reset(seed=0, options={"profile_id": "t-dep", "crisis_opening": True})
    assert env.transcript.turns[-1].text.endswith(statement)
    for action in ACTIONS:
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    patient = [t.text for t in env.transcript.turns if t.speaker == "patient"]
    assert sum(statement in text for text in patient) == 1
    assert len(patient) > 2  # the session went on past the opening, disclosures included

    env.reset(seed=0, options={"profile_id": "t-dep"})
    assert statement not in env.transcript.turns[-1].text
    with pytest.raises(ValueError, match="crisis_opening.*risk_flags"):
        env.reset(options={"profile_id": "t-ocd", "crisis_opening": True})
    with pytest.raises(ValueError, match="crisis_opening"):
        env.reset(options={"profile_id": "t-dep", "crisis_opening": "yes"})
