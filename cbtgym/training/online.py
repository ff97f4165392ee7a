"""Online RL plumbing: drive CBTSession-v0 with the current policy inside TRL's GRPOTrainer.

A training row names a session (seed) and a therapist turn. The rollout function plays
the session with the current policy (greedy) up to that turn, then samples the group of
completions at that patient state. Patient turns are part of the prompt, so they never
enter the loss. The reward function lets the patient answer each completion and applies
the environment's reward function, batched over all completions.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..backends.base import Sampling
from ..backends.hf import HFBackend
from ..envs.sessions import EpisodeSpec, SessionBatch, make_patient, make_reward
from ..patients import PatientState
from ..profiles import load_profiles
from ..transcript import Transcript


def session_rows(n_sessions: int, rounds: int, seed: int = 0) -> list[dict[str, Any]]:
    """Dataset rows: one per (session seed, therapist turn)."""
    return [{"prompt": [{"role": "user", "content": f"session {seed * 100000 + s} turn {t}"}],
             "session_seed": seed * 100000 + s, "turn": t}
            for s in range(n_sessions) for t in range(rounds)]


class EnvRollout:
    """``rollout_func`` for GRPOTrainer (TRL >= 1.x).

    Args:
        system_prompt: The therapist's system prompt.
        env_kwargs: Arguments of CBTSession-v0 (profiles, patient, reward_fn, max_rounds...).
        sampling: Decoding of the group's completions.
    """

    def __init__(self, system_prompt: str, env_kwargs: dict[str, Any], sampling: Sampling) -> None:
        self.system_prompt = system_prompt
        self.env_kwargs = env_kwargs
        self.sampling = sampling
        self.calls = 0

    def __call__(self, prompts: list, trainer) -> dict[str, Any]:
        tok = trainer.processing_class
        policy = HFBackend(trainer.model, tok)
        rows = [_parse(p) for p in prompts]
        unique = list(dict.fromkeys(rows))
        states = self._states(policy, unique)
        convs = [states[r][0].as_chat("therapist", self.system_prompt) for r in rows]
        texts = policy.generate(convs, self.sampling.with_(seed=trainer.state.global_step * 7919 + self.calls))
        self.calls += 1
        prompt_ids = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in convs]
        completion_ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
        return {
            "prompt_ids": [list(p) for p in prompt_ids],
            "completion_ids": completion_ids,
            "logprobs": None,
            "session_state": [json.dumps({"transcript": states[r][0].to_dict(), "patient": states[r][1]}) for r in rows],
        }

    def _states(self, policy: HFBackend, rows: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[Transcript, dict]]:
        """Play each session greedily with the current policy up to its turn (one batch for all).

        Each row's state is its transcript and its patient state (:meth:`PatientState.to_dict`), JSON-ready.
        """
        batch = SessionBatch.from_kwargs(**self.env_kwargs)
        sessions = batch.reset([EpisodeSpec(seed) for seed, _ in rows])
        greedy = Sampling(max_new_tokens=self.sampling.max_new_tokens)
        out: dict[tuple[int, int], tuple[Transcript, dict]] = {}
        for step in range(max(t for _, t in rows) + 1):
            for (seed, turn), s in zip(rows, sessions):
                if turn == step or (s.done and (seed, turn) not in out):
                    out[(seed, turn)] = (s.transcript.copy(), s.patient_state.to_dict())
            live = [i for i, ((_, t), s) in enumerate(zip(rows, sessions)) if not s.done and t > step]
            if not live:
                break
            said = policy.generate([sessions[i].transcript.as_chat("therapist", self.system_prompt) for i in live], greedy)
            actions: list[str | None] = [None] * len(rows)
            for i, a in zip(live, said):
                actions[i] = a.strip() or "..."
            batch.step(actions)
        return out


class EnvReward:
    """TRL reward function: the patient answers each completion, then the env's reward scores it."""

    def __init__(self, env_kwargs: dict[str, Any]) -> None:
        self.profiles = {p.id: p for p in load_profiles(env_kwargs.get("profiles", "bank:train"))}
        self.patient = make_patient(env_kwargs.get("patient"), env_kwargs.get("patient_backend"))
        self.reward_fn = make_reward(env_kwargs.get("reward_fn", "rubric"))
        self.__name__ = "cbt_env_reward"

    def __call__(self, prompts: Sequence, completions: Sequence, session_state: Sequence[str], **_: Any) -> list[float]:
        transcripts, profiles, states = [], [], []
        for comp, raw in zip(completions, session_state):
            saved = json.loads(raw)
            t = Transcript.from_dict(saved["transcript"])
            text = comp[0]["content"] if isinstance(comp, list) else str(comp)
            t.add("therapist", text.strip() or "...")
            profile = self.profiles[t.profile_id]
            if profile.attitude != t.attitude:
                profile = profile.with_attitude(t.attitude)
            state = PatientState.from_dict(saved["patient"], profile)
            transcripts.append(t)
            profiles.append(profile)
            states.append(state)
        for t, reply in zip(transcripts, self.patient.respond(states, transcripts)):
            t.add("patient", reply.text, satisfaction=reply.satisfaction, meta=reply.meta)
        return [float(r.value) for r in self.reward_fn(transcripts, profiles, [False] * len(transcripts))]


def _parse(prompt) -> tuple[int, int]:
    text = prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)
    _, seed, _, turn = text.split()
    return int(seed), int(turn)
