"""Pair collection: batching, scoring (turn, patient, episode), margins, judge failures, and resuming a killed run
without loss or duplicates."""

import json
import multiprocessing as mp
import os
import re
import signal
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from cbtgym.backends.base import Backend, Sampling
from cbtgym.backends.scripted import ScriptedBackend, stable_index
from cbtgym.envs.reward import PlaceholderReward, StepReward
from cbtgym.jsonl import read_jsonl
from cbtgym.embeddings import EMBED_DIM
from cbtgym.patients import LLMPatient, RulePatient
from cbtgym.patients.moves import MoveReader
from cbtgym.resume import ResumeMismatch
from cbtgym.rollout import EpisodeSpec
from cbtgym.training.preferences import CandidateScoring, collect_candidates, count_failures, pairs_from_candidates
from rewards.composite import Component, CompositeReward
from rewards.types import JudgeResult
from tests.factories import echo_patient_backend, profiles

CANDIDATES = [
    "What went through your mind when that happened?",
    "You should just relax.",
    "That sounds hard. How did you feel?",
    "Okay.",
]


class ToyPolicy(Backend):
    """A sampled 'policy': the k copies of a state in one batch get different candidates, as sampling gives;
    the result depends only on the batch's content and seed, so reruns are identical."""

    name = "toy-policy"

    def _generate(self, conversations, sampling):
        seen: dict[str, int] = {}
        out = []
        for conv in conversations:
            key = repr(conv)
            seen[key] = seen.get(key, -1) + 1
            out.append(CANDIDATES[(stable_index(conv, 4, salt=sampling.seed) + seen[key]) % 4])
        return out, None


def policy():
    return ToyPolicy()


class CountingReward:
    """Scores a reply by whether it asks a question; counts calls to check batching."""

    def __init__(self, delay: float = 0.0):
        self.calls, self.delay = 0, delay

    def __call__(self, transcripts, profiles, done):
        self.calls += 1
        time.sleep(self.delay)
        return [StepReward(1.0 if t.last("therapist").text.endswith("?") else 0.0) for t in transcripts]


def collect(out, n=6, reward=None, **kw):
    specs = [EpisodeSpec(seed=i) for i in range(n)]
    return collect_candidates(policy(), "system", specs, out, k=4, sampling=Sampling(max_new_tokens=8, temperature=1.0),
                              batch_size=3, profiles=profiles(), max_rounds=3, reward_fn=reward or CountingReward(), **kw)


def test_candidates_are_scored_in_one_reward_call_per_step_and_pairs_respect_the_margin(tmp_path):
    reward = CountingReward()
    path = collect(tmp_path, n=3, reward=reward)
    recs = list(read_jsonl(path))
    steps = max(len(r["states"]) for r in recs)
    assert len(recs) == 3 and steps == 3 and all(1 <= len(r["states"]) <= 3 for r in recs)
    # one batch of 3 sessions: each step makes one candidate-scoring call and one env reward call
    assert reward.calls == 2 * steps
    pairs = pairs_from_candidates(path, min_margin=0.5)
    assert pairs and all(p["chosen"][0]["content"].endswith("?") and not p["rejected"][0]["content"].endswith("?")
                         for p in pairs)
    assert all(p["prompt"][0] == {"role": "system", "content": "system"} for p in pairs)
    assert len(pairs_from_candidates(path, min_margin=2.0)) == 0


def test_patient_scoring_mode_scores_after_the_patient_answers(tmp_path):
    seen = []

    def reward(transcripts, profiles, done):
        seen.extend(t.turns[-1].speaker for t in transcripts)
        return [StepReward(0.0) for _ in transcripts]

    collect(tmp_path, n=1, reward=reward, scoring=CandidateScoring("patient"))
    assert "patient" in seen


class RawPolicy(ToyPolicy):
    """Candidates with typographic quotes and a line break: what a policy writes before the env cleans it."""

    def _generate(self, conversations, sampling):
        texts, _ = super()._generate(conversations, sampling)
        return [t.replace("What", "What\u2019s\nwhat") for t in texts], None


@pytest.mark.parametrize("mode", ["turn", "patient"])
def test_candidates_are_scored_as_written_with_done_false_and_leave_the_sessions_alone(tmp_path, mode):
    """The scores pairs were made with: the raw candidate in a copy of its session, never a core step."""
    seen = []

    def reward(transcripts, profiles, done):
        seen.append((len(transcripts), list(done), [t.turns[-2 if mode == "patient" else -1] for t in transcripts],
                     [t.last("therapist").text for t in transcripts]))
        return [StepReward(0.0) for _ in transcripts]

    specs = [EpisodeSpec(seed=i) for i in range(2)]
    path = collect_candidates(RawPolicy(), "system", specs, tmp_path, k=4, sampling=Sampling(max_new_tokens=8, temperature=1.0),
                              batch_size=2, profiles=profiles(), max_rounds=2, reward_fn=reward, scoring=CandidateScoring(mode))
    scored = [turns for n, _, turns, _ in seen if n == 8]  # the candidate scoring calls (2 sessions x 4)
    assert scored and all(not any(done) for n, done, _, _ in seen if n == 8)
    raw = {c for rec in read_jsonl(path) for st in rec["states"] for c in st["candidates"]}
    assert any("\u2019s\n" in c for c in raw)
    assert all(t.speaker == "therapist" and t.text in raw for turns in scored for t in turns)
    # The session itself went on with the cleaned text, one therapist turn per step.
    stepped = [text for n, _, _, texts in seen if n == 2 for text in texts]
    assert stepped and all("\u2019" not in text and "What's\nwhat" in text or "What" not in text for text in stepped)


def _bag_of_words(texts):
    """Deterministic L2-normalised hashed word counts: the rule patient's meaning reader without torch, which a
    forked child of a process that already ran torch's thread pool can hang in."""
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z']+", text.lower()):
            out[i, zlib.crc32(word.encode()) % EMBED_DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class _QuestionMarkActs:
    def classify(self, texts, contexts=None):
        return [SimpleNamespace(type="question_perspectives", category="question") if "?" in t
                else SimpleNamespace(type="oov", category="oov") for t in texts]


def _torch_free_patient():
    return RulePatient(reader=MoveReader(acts=_QuestionMarkActs(), embed=_bag_of_words))


def _collect_slowly(out):
    collect(out, n=9, reward=CountingReward(delay=0.05), patient=_torch_free_patient())


def test_killed_collection_resumes_without_losing_or_duplicating(tmp_path):
    full = tmp_path / "full"
    collect(full, n=9, patient=_torch_free_patient())
    expected = {r["key"]: r for r in read_jsonl(full / "candidates.jsonl")}

    killed = tmp_path / "killed"
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_collect_slowly, args=(killed,))
    proc.start()
    path = killed / "candidates.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") >= 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    partial = path.read_text().count("\n")
    assert 3 <= partial < 9, f"kill landed outside the run ({partial} episodes written)"

    collect(killed, n=9, patient=_torch_free_patient())
    got = list(read_jsonl(path))
    keys = [r["key"] for r in got]
    assert len(keys) == len(set(keys)) == 9
    assert {k: r for k, r in zip(keys, got)} == expected
    assert json.dumps(pairs_from_candidates(path, 0.5), sort_keys=True) == json.dumps(
        pairs_from_candidates(full / "candidates.jsonl", 0.5), sort_keys=True)


class GreedyMarkedPolicy(ToyPolicy):
    """The toy policy, but its greedy reply is one recognisable statement (not a question, so it scores 0)."""

    GREEDY = "I hear you."

    def _generate(self, conversations, sampling):
        if sampling.temperature == 0:
            return [self.GREEDY] * len(conversations), None
        return super()._generate(conversations, sampling)


def test_greedy_anchor_advances_with_the_greedy_reply_and_pairs_against_it(tmp_path):
    specs = [EpisodeSpec(seed=i) for i in range(4)]
    path = collect_candidates(GreedyMarkedPolicy(), "system", specs, tmp_path, k=4,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), batch_size=2, greedy_anchor=True,
                              profiles=profiles(), max_rounds=3, reward_fn=CountingReward())
    states = [st for r in read_jsonl(path) for st in r["states"]]
    assert states and all(st["greedy"] == 0 and st["candidates"][0] == GreedyMarkedPolicy.GREEDY for st in states)
    assert all(len(st["candidates"]) == 4 for st in states)
    # the session went on with the greedy reply: later prompts show it as the therapist's previous turn
    later = [st for st in states if st["turn"] > 0]
    assert later and all(st["prompt"][-2] == {"role": "assistant", "content": GreedyMarkedPolicy.GREEDY} for st in later)

    pairs = pairs_from_candidates(path, min_margin=0.5, pairing="greedy")
    # the greedy statement scores 0 and every question scores 1: each pair is a question over the greedy reply
    assert pairs and all(p["rejected"][0]["content"] == GreedyMarkedPolicy.GREEDY for p in pairs)
    assert all(p["chosen"][0]["content"].endswith("?") for p in pairs)
    assert len({p["id"] for p in pairs}) == len(pairs)


def test_greedy_pairing_needs_greedy_anchored_candidates(tmp_path):
    path = collect(tmp_path, n=1)
    with pytest.raises(ValueError, match="greedy_anchor"):
        pairs_from_candidates(path, 0.5, pairing="greedy")
    with pytest.raises(ValueError, match="pairing"):
        pairs_from_candidates(path, 0.5, pairing="best")


class OpeningAwarePolicy(GreedyMarkedPolicy):
    """Continues a prefilled opening with a question (the only way this policy ever asks one)."""

    def _generate(self, conversations, sampling):
        out = []
        for conv in conversations:
            if conv[-1]["role"] == "assistant":
                out.append(" went through your mind?")
            elif sampling.temperature == 0:
                out.append(self.GREEDY)
            else:
                out.append("Okay.")
        return out, None


def test_guided_candidates_continue_the_openings_and_never_drive_the_session(tmp_path):
    specs = [EpisodeSpec(seed=i) for i in range(3)]
    path = collect_candidates(OpeningAwarePolicy(), "system", specs, tmp_path, k=4,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), batch_size=3, greedy_anchor=True,
                              explore_prefixes=["What", "Which thought"],
                              profiles=profiles(), max_rounds=3, reward_fn=CountingReward())
    states = [st for r in read_jsonl(path) for st in r["states"]]
    assert states and all(len(st["candidates"]) == 4 for st in states)
    assert {st["guided"]["3"] for st in states} == {"What", "Which thought"}
    for st in states:
        opening = st["guided"]["3"]
        assert list(st["guided"]) == ["3"]
        assert st["candidates"][3] == f"{opening} went through your mind?"
        assert st["candidates"][:3] == [OpeningAwarePolicy.GREEDY, "Okay.", "Okay."]
        # the prompt stored for training is the dialogue, not the opening
        assert st["prompt"][-1]["role"] == "user"
    later = [st for st in states if st["turn"] > 0]
    assert later and all(st["prompt"][-2]["content"] == OpeningAwarePolicy.GREEDY for st in later)
    pairs = pairs_from_candidates(path, min_margin=0.5, pairing="greedy")
    assert pairs and all(p["chosen"][0]["content"].endswith("went through your mind?") for p in pairs)


def test_guided_exploration_validates_its_openings(tmp_path):
    with pytest.raises(ValueError, match="explore_prefixes"):
        collect(tmp_path, n=1, explore_prefixes=["What", " "])
    with pytest.raises(ValueError, match="k >= 3"):
        collect_candidates(policy(), "system", [EpisodeSpec(seed=0)], tmp_path, k=2, greedy_anchor=True,
                           explore_prefixes=["What"], profiles=profiles(), max_rounds=2, reward_fn=CountingReward())


def test_opening_groups_give_one_guided_candidate_each_and_best_advance_follows_the_top_score(tmp_path):
    specs = [EpisodeSpec(seed=i) for i in range(2)]
    path = collect_candidates(OpeningAwarePolicy(), "system", specs, tmp_path, k=4,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), batch_size=2, greedy_anchor=True,
                              explore_prefixes=[["What", "Which thought"], "Are you safe? What"], advance_best=True,
                              profiles=profiles(), max_rounds=3, reward_fn=CountingReward())
    states = [st for r in read_jsonl(path) for st in r["states"]]
    assert states and all(st["guided"]["3"] == "Are you safe? What" and st["guided"]["2"] in ("What", "Which thought")
                          for st in states)
    assert all(st["candidates"][:2] == [OpeningAwarePolicy.GREEDY, "Okay."] for st in states)
    # the questions score 1 and the statements 0: sessions went on with the first question (the best)
    later = [st for st in states if st["turn"] > 0]
    assert later and all(st["prompt"][-2]["content"].endswith("went through your mind?") for st in later)
    with pytest.raises(ValueError, match="k >= 4"):
        collect_candidates(policy(), "system", specs, tmp_path / "x", k=3, greedy_anchor=True,
                           explore_prefixes=[["What"], "How"], profiles=profiles(), max_rounds=2, reward_fn=CountingReward())
    with pytest.raises(ValueError, match="explore_prefixes"):
        collect_candidates(policy(), "system", specs, tmp_path / "y", k=4, explore_prefixes=[["What"], []],
                           profiles=profiles(), max_rounds=2, reward_fn=CountingReward())


def test_collection_specs_pin_risk_episodes_to_risk_profiles():
    from cbtgym.profiles import load_profiles
    from cbtgym.training.preferences import collection_specs

    specs = collection_specs("bank:train", 5, 14, seed=1)
    drawn, pinned = specs[:5], specs[5:]
    assert [s.profile_id for s in drawn] == [None] * 5
    risky = {p.id for p in load_profiles("bank:train") if p.risk_flags}
    assert len(pinned) == 14 and {s.profile_id for s in pinned} == risky
    assert {s.attitude for s in pinned} == {"active", "passive"}
    assert len({s.key for s in specs}) == len(specs)  # resumable: every session its own key
    assert collection_specs("bank:train", 5, 0, seed=1) == drawn
    assert not any(s.crisis_opening for s in specs)
    opened = collection_specs("bank:train", 5, 14, seed=1, risk_opening=True)
    assert [s.crisis_opening for s in opened] == [False] * 5 + [True] * 14
    assert opened[:5] == drawn and not {s.key for s in opened[5:]} & {s.key for s in pinned}  # no resume mix-up


def test_collection_specs_without_risk_profiles_names_the_field(tmp_path):
    from cbtgym.profiles.loaders import save_profiles
    from cbtgym.training.preferences import collection_specs

    path = tmp_path / "calm.jsonl"
    save_profiles([p for p in profiles() if not p.risk_flags], path)
    with pytest.raises(ValueError, match="risk_episodes"):
        collection_specs(str(path), 2, 3)


def test_improve_pairing_keeps_only_pairs_that_beat_the_greedy_reply(tmp_path):
    # one state: greedy small talk in the middle, a question above it, an off-topic reply below it
    state = {"turn": 0, "prompt": [{"role": "user", "content": "hi"}], "greedy": 0,
             "candidates": ["I'm here for you.", "What went through your mind?", "Buy a boat."],
             "scores": [0.5, 1.5, -0.5]}
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"key": "s0", "states": [state]}) + "\n")

    both = pairs_from_candidates(path, min_margin=0.5, pairing="greedy")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in both] == [
        ("What went through your mind?", "I'm here for you."), ("I'm here for you.", "Buy a boat.")]
    improve = pairs_from_candidates(path, min_margin=0.5, pairing="improve")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in improve] == [
        ("What went through your mind?", "I'm here for you.")]
    # a greedy reply that is already the best gives no pair at all
    state["scores"] = [2.0, 1.5, -0.5]
    path.write_text(json.dumps({"key": "s0", "states": [state]}) + "\n")
    assert pairs_from_candidates(path, min_margin=0.5, pairing="improve") == []


# -- episode scoring and judge failures ---------------------------------------------------------------------

LIGHTHOUSE = "Imagine a lighthouse. What comes to mind?"


def scripted_policy():
    """Greedy 'Tell me more.', sampled 'Okay.', and the guided opening continued into LIGHTHOUSE."""

    def reply(conv, sampling):
        if conv[-1]["role"] == "assistant":
            return " What comes to mind?"
        return "Tell me more." if sampling.greedy else "Okay."

    return ScriptedBackend(reply, name="scripted-policy")


class WordJudge:
    """A whole-session judge: ``sign`` when the transcript holds ``word``, else 0; ``sign=None`` fails to parse there."""

    def __init__(self, word: str, sign: float | None):
        self.word, self.sign = word, sign

    def score(self, transcripts, profiles):
        hit = [self.word in t.render() for t in transcripts]
        if self.sign is None:
            return [JudgeResult(None, parse_failed=True) if h else JudgeResult(0.0) for h in hit]
        return [JudgeResult(self.sign * float(h)) for h in hit]


def flat_then_terminal(sign):
    """A flat step reward plus a terminal judge that only the finished session reaches (done=True)."""
    return CompositeReward([Component("flat", PlaceholderReward(), 1.0, "step"),
                            Component("lighthouse", WordJudge("lighthouse", sign), 1.0, "terminal")])


def collect_lighthouse(out, scoring, sign, n=2, **env):
    env = {"profiles": profiles(), "max_rounds": 3, "reward_fn": flat_then_terminal(sign), **env}
    return collect_candidates(scripted_policy(), "system", [EpisodeSpec(seed=i) for i in range(n)], out, k=3,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), scoring=scoring, batch_size=n,
                              greedy_anchor=True, explore_prefixes=["Imagine a lighthouse."], **env)


def chosen_and_rejected(path):
    return [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs_from_candidates(path, 0.5)]


def test_episode_scoring_flips_with_the_terminal_judge_and_patient_scoring_never_sees_it(tmp_path):
    liked = collect_lighthouse(tmp_path / "liked", CandidateScoring("episode"), 1.0)
    states = [st for r in read_jsonl(liked) for st in r["states"]]
    assert states and all(st["candidates"] == ["Tell me more.", "Okay.", LIGHTHOUSE] for st in states)
    # the step part is flat: a candidate's episode return is the terminal judge's verdict on its finished session
    assert all(st["scores"] == [0.0, 0.0, 1.0] for st in states)
    assert {c for c, _ in chosen_and_rejected(liked)} == {LIGHTHOUSE}

    disliked = collect_lighthouse(tmp_path / "disliked", CandidateScoring("episode"), -1.0)
    assert all(st["scores"] == [0.0, 0.0, -1.0] for r in read_jsonl(disliked) for st in r["states"])
    pairs = chosen_and_rejected(disliked)
    assert pairs and {r for _, r in pairs} == {LIGHTHOUSE} and LIGHTHOUSE not in {c for c, _ in pairs}

    for sign in (1.0, -1.0):  # judged after the patient answers, the session has not ended: no terminal judge
        path = collect_lighthouse(tmp_path / f"patient{sign}", CandidateScoring("patient"), sign)
        assert all(st["scores"] == [0.0, 0.0, 0.0] for r in read_jsonl(path) for st in r["states"])
        assert chosen_and_rejected(path) == []


@pytest.mark.parametrize("rollouts", [1, 2])
def test_all_forks_of_a_step_share_one_policy_call_and_one_patient_call(tmp_path, rollouts):
    patient_backend = echo_patient_backend()
    policy_backend = scripted_policy()
    rounds, n = 3, 2
    collect_candidates(policy_backend, "system", [EpisodeSpec(seed=i) for i in range(n)], tmp_path, k=3,
                       sampling=Sampling(max_new_tokens=8, temperature=1.0), scoring=CandidateScoring("episode", rollouts),
                       batch_size=n, greedy_anchor=True, explore_prefixes=["Imagine a lighthouse."], profiles=profiles(),
                       max_rounds=rounds, reward_fn=flat_then_terminal(1.0),
                       patient=LLMPatient(patient_backend, rate_satisfaction=False))
    # Neither side ever ends a session early, so at turn t the forks play rounds - t - 1 steps after the candidate's.
    continuation_steps = sum(rounds - t - 1 for t in range(rounds))
    # per turn: the samples with the guided prefills, and the greedy reply; then one call per continuation step
    assert policy_backend.stats.calls == 2 * rounds + continuation_steps
    # the opening; per turn the candidates' own step and the session's step; one per continuation step
    assert patient_backend.stats.calls == 1 + 2 * rounds + continuation_steps
    # every continuation call held every fork of both sessions: n sessions x k candidates x rollouts
    forks = n * 3 * rollouts
    candidate_convs = 2 * rounds * n + rounds * n  # k-1 samples/prefills and the greedy reply per state
    assert policy_backend.stats.conversations == candidate_convs + continuation_steps * forks


def test_episode_scoring_settings_are_part_of_the_resume_sidecar(tmp_path):
    collect_lighthouse(tmp_path, CandidateScoring("episode"), 1.0, n=1)
    side = json.loads((tmp_path / "candidates.jsonl.settings.json").read_text())["settings"]
    assert side["scoring"] == {"mode": "episode", "rollouts": 1}
    with pytest.raises(ResumeMismatch, match="scoring.rollouts"):
        collect_lighthouse(tmp_path, CandidateScoring("episode", 2), 1.0, n=1)
    other = tmp_path / "patient"
    collect_lighthouse(other, CandidateScoring("patient"), 1.0, n=1)
    # turn and patient scoring record what they always did, so their old files still resume
    assert json.loads((other / "candidates.jsonl.settings.json").read_text())["settings"]["scoring"] == "patient"


def test_candidate_scoring_names_its_fields():
    with pytest.raises(ValueError, match="scoring mode"):
        CandidateScoring("episodes")
    with pytest.raises(ValueError, match="rollouts"):
        CandidateScoring("episode", 0)
    with pytest.raises(ValueError, match="only applies to mode 'episode'"):
        CandidateScoring("patient", 2)


class FlakyJudge:
    """Scores the newest therapist turn (1 for a question, else 0) and fails to parse on 'Okay.'."""

    def score(self, transcripts, profiles):
        last = [t.last("therapist").text for t in transcripts]
        return [JudgeResult(None, parse_failed=True) if x == "Okay." else JudgeResult(float(x.endswith("?")))
                for x in last]


@pytest.mark.parametrize("mode", ["turn", "patient"])
def test_failed_judges_leave_candidates_unscored_excluded_and_counted_never_zero(tmp_path, mode):
    reward = CompositeReward([Component("question", FlakyJudge(), 1.0, "delta")])
    specs = [EpisodeSpec(seed=i) for i in range(4)]
    path = collect_candidates(GreedyMarkedPolicy(), "system", specs, tmp_path, k=4,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), batch_size=2, greedy_anchor=True,
                              advance_best=True, scoring=CandidateScoring(mode), profiles=profiles(), max_rounds=3,
                              reward_fn=reward)
    states = [st for r in read_jsonl(path) for st in r["states"]]
    okay = sum(st["candidates"].count("Okay.") for st in states)
    assert okay, "the toy policy samples 'Okay.' in some states"
    for st in states:
        for cand, score in zip(st["candidates"], st["scores"]):
            assert (score is None) == (cand == "Okay.")  # null in the file, never 0
        assert st.get("failed", 0) == st["candidates"].count("Okay.")
        assert ("failed" in st) == ("Okay." in st["candidates"])
    # an unscored candidate is never best, so the sessions never went on with it
    assert all(st["prompt"][-2]["content"] != "Okay." for st in states if st["turn"] > 0)
    for pairing in ("extremes", "greedy"):
        pairs = pairs_from_candidates(path, 0.5, pairing)
        assert pairs and all("Okay." not in (p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs)
        assert all(p["score_chosen"] is not None and p["score_rejected"] is not None for p in pairs)
    assert count_failures(path, "greedy") == {"candidates": okay, "states": sum("failed" in st for st in states),
                                              "states_unpaired": 0}


def test_states_without_two_scored_candidates_give_no_pair_and_are_counted(tmp_path):
    states = [
        # the greedy reply's judge failed: no pair against it, but the two scored samples still pair as extremes
        {"turn": 0, "prompt": [], "greedy": 0, "candidates": ["a", "b?", "c"], "scores": [None, 1.5, 0.0], "failed": 1},
        # one scored candidate: nothing to rank under any pairing
        {"turn": 1, "prompt": [], "greedy": 0, "candidates": ["a", "b?", "c"], "scores": [0.5, None, None], "failed": 2},
        {"turn": 2, "prompt": [], "greedy": 0, "candidates": ["a", "b?", "c"], "scores": [0.0, 1.0, None], "failed": 1},
    ]
    path = tmp_path / "candidates.jsonl"
    path.write_text(json.dumps({"key": "s0", "states": states}) + "\n")
    assert [p["id"] for p in pairs_from_candidates(path, 0.5)] == ["s0#0", "s0#2"]
    assert [p["id"] for p in pairs_from_candidates(path, 0.5, "greedy")] == ["s0#2+"]
    assert count_failures(path) == {"candidates": 4, "states": 3, "states_unpaired": 1}
    assert count_failures(path, "greedy") == {"candidates": 4, "states": 3, "states_unpaired": 2}


def test_a_terminal_judge_failure_leaves_the_episode_return_unscored(tmp_path):
    path = collect_lighthouse(tmp_path, CandidateScoring("episode", 2), None)
    states = [st for r in read_jsonl(path) for st in r["states"]]
    assert states and all(st["scores"] == [0.0, 0.0, None] and st["failed"] == 1 for st in states)
    assert chosen_and_rejected(path) == []
    assert count_failures(path) == {"candidates": len(states), "states": len(states), "states_unpaired": 0}


@pytest.mark.parametrize("mode", ["patient", "episode"])
def test_crisis_k_widens_only_the_crisis_opening_state(tmp_path, mode):
    """A session that opens in a crisis gets crisis_k candidates in its first state, every other state k;
    each candidate keeps its own score and the session goes on with the best."""
    specs = [EpisodeSpec(seed=0), EpisodeSpec(seed=1, profile_id="t-dep", crisis_opening=True)]
    reward = CountingReward()
    path = collect_candidates(GreedyMarkedPolicy(), "system", specs, tmp_path, k=3, crisis_k=7,
                              sampling=Sampling(max_new_tokens=8, temperature=1.0), batch_size=2, greedy_anchor=True,
                              advance_best=True, scoring=CandidateScoring(mode), profiles=profiles(), max_rounds=3,
                              reward_fn=reward)
    recs = {r["key"]: r for r in read_jsonl(path)}
    crisis = recs[specs[1].key]["states"]
    assert [len(st["candidates"]) for st in crisis] == [7] + [3] * (len(crisis) - 1)
    assert all(len(st["candidates"]) == len(st["scores"]) == 3 for st in recs[specs[0].key]["states"])
    assert len(crisis[0]["scores"]) == 7 and all(s in (0.0, 1.0) or mode == "episode" for s in crisis[0]["scores"])
    best = crisis[0]["candidates"][max(range(7), key=lambda c: crisis[0]["scores"][c])]
    assert crisis[1]["prompt"][-2]["content"] == best
    with pytest.raises(ValueError, match="crisis_k"):
        collect_candidates(policy(), "system", specs, tmp_path / "x", k=3, crisis_k=1, profiles=profiles(),
                           max_rounds=2, reward_fn=CountingReward())
