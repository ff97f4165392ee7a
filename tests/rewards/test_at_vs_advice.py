"""Acceptance: asking about thoughts beats giving advice, on AT recovery and on the embedded reward.

Two scripted therapists (fixed utterances, one per round) run through the real vector env over the
LLM4CBT personas (read from ``../shared``) and the bank's test profiles:

* ``DOWNWARD_ARROW`` asks what went through the patient's mind, then what it would mean about them;
* ``ADVICE`` gives advice (breathing, walks, sleep, a plan) without asking anything.

Both open with the same validation, so the only difference is asking about thoughts versus
advising. Compared: the mean AT recovery (:class:`~rewards.at_recovery.EmbeddingATJudge`, best
MiniLM cosine of any patient turn to the ground-truth thought) and the mean embedded rubric
reward (sum of the env's step rewards), on the rule-based patient (all profiles, 4 rounds) and on
the LLM patient (SmolLM2 greedy, 8 profiles, 2 rounds, no satisfaction ratings, to stay small).
"""

from __future__ import annotations

from statistics import mean

import pytest

from cbtgym.backends.base import Sampling
from cbtgym.envs.vector import CBTSessionVectorEnv
from cbtgym.profiles import load_profiles
from cbtgym.profiles.schema import PatientProfile
from rewards.at_recovery import EmbeddingATJudge

pytestmark = pytest.mark.slow

DOWNWARD_ARROW = [
    "That sounds really hard. When that happened, what went through your mind?",
    "And if that were true, what would it mean about you?",
    "What does that say about you as a person?",
    "When that thought comes, what do you tell yourself will happen next?",
]
ADVICE = [
    "That sounds really hard. It might help to try some slow breathing when you notice the tension.",
    "A short walk each day can also help you feel calmer.",
    "Keeping a regular sleep routine and cutting down on caffeine often makes a difference.",
    "Maybe write down a plan for the week so things feel more manageable.",
]
THERAPISTS = {"downward_arrow": DOWNWARD_ARROW, "advice": ADVICE}
#: The LLM-patient subset: a persona per LLM4CBT disorder and test profiles of five more
#: disorders (active and passive), fixed so that runs compare.
LLM_SUBSET = (
    "llm4cbt-patient-GAD-v1", "llm4cbt-patient-OCD-v2", "llm4cbt-patient-PTSD-v3",
    "bank-gad-03", "bank-dep-02", "bank-soc-01", "bank-per-03", "bank-hea-02",
)


@pytest.fixture(scope="module")
def profiles(shared_dir) -> list[PatientProfile]:
    # The loaders never guess where ../shared is; the shared_dir fixture skips when it is absent.
    return load_profiles(shared_dir / "data" / "llm4cbt-personas") + load_profiles("bank:test")


@pytest.fixture(scope="module")
def at_judge() -> EmbeddingATJudge:
    return EmbeddingATJudge()


def run_both(profiles: list[PatientProfile], rounds: int, **env_kwargs) -> dict[str, list[dict]]:
    """Every profile with each scripted therapist, all sessions stepped together in one vector env."""
    names = list(THERAPISTS)
    n = len(profiles)
    venv = CBTSessionVectorEnv(n * len(names), profiles=profiles, max_rounds=rounds, **env_kwargs)
    venv.reset(seed=0, options={"per_env": [{"profile_id": p.id} for p in profiles] * len(names)})
    totals = [0.0] * venv.num_envs
    k = 0
    while not venv.done.all():
        actions = [THERAPISTS[name][min(k, len(THERAPISTS[name]) - 1)] for name in names for _ in profiles]
        _, rewards, *_ = venv.step(actions)
        totals = [t + float(r) for t, r in zip(totals, rewards)]
        k += 1
    sessions = {name: [] for name in names}
    for j, env in enumerate(venv.envs):
        sessions[names[j // n]].append({"profile": env.profile, "transcript": env.transcript.copy(), "reward": totals[j]})
    return sessions


def compare(sessions: dict[str, list[dict]], at_judge: EmbeddingATJudge, label: str) -> dict[str, dict[str, float]]:
    """Mean AT recovery and mean rubric reward per therapist; prints the per-profile table and patient turns."""
    out = {}
    for name, runs in sessions.items():
        results = at_judge.score([r["transcript"] for r in runs], [r["profile"] for r in runs])
        for r, res in zip(runs, results):
            r["at"] = res.total
        out[name] = {"at": mean(r["at"] for r in runs), "reward": mean(r["reward"] for r in runs)}
    print(f"\n[{label}] " + "  ".join(f"{k}: AT {v['at']:.3f}, reward {v['reward']:+.3f}" for k, v in out.items()))
    for arrow, advice in zip(sessions["downward_arrow"], sessions["advice"]):
        print(f"  {arrow['profile'].id:26} AT {arrow['at']:.2f} vs {advice['at']:.2f}   reward {arrow['reward']:+.2f} vs {advice['reward']:+.2f}")
        for turn in arrow["transcript"].patient_turns[1:]:
            print(f"      patient (downward arrow): {turn.text[:160]}")
    return out


def assert_thoughts_beat_advice(means: dict[str, dict[str, float]], sessions: dict[str, list[dict]]) -> None:
    arrow, advice = means["downward_arrow"], means["advice"]
    said = "\n".join(
        f"{r['profile'].id}: " + " | ".join(t.text[:100] for t in r["transcript"].patient_turns) for r in sessions["downward_arrow"]
    )
    assert arrow["at"] > advice["at"], f"AT recovery: downward arrow {arrow['at']:.3f} <= advice {advice['at']:.3f}; the patient said:\n{said}"
    assert arrow["reward"] > advice["reward"], f"rubric reward: downward arrow {arrow['reward']:.3f} <= advice {advice['reward']:.3f}"


def test_downward_arrow_beats_advice_on_the_rule_patient(profiles, at_judge):
    sessions = run_both(profiles, rounds=4, patient="rule")
    assert len(sessions["advice"]) == len(profiles) >= 9 + 17
    means = compare(sessions, at_judge, "rule patient")
    assert_thoughts_beat_advice(means, sessions)
    # The rule patient states the thought when asked: the downward arrow reaches it in every
    # session, advice in none (the opening and "nothing new" lines stay far from it).
    threshold = at_judge.threshold
    assert all(r["at"] >= threshold for r in sessions["downward_arrow"])
    assert all(r["at"] < threshold for r in sessions["advice"])


def test_downward_arrow_beats_advice_on_the_llm_patient(profiles, at_judge, embedded_hf):
    subset = [p for p in profiles if p.id in LLM_SUBSET]
    assert len(subset) == len(LLM_SUBSET)
    sessions = run_both(
        subset, rounds=2, patient="llm", patient_backend=embedded_hf, rate_satisfaction=False,
        patient_sampling=Sampling(max_new_tokens=24, temperature=0.0),
    )
    means = compare(sessions, at_judge, "LLM patient (SmolLM2, greedy)")
    assert_thoughts_beat_advice(means, sessions)
