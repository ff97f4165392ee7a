"""Run many sessions with a batched therapist: the loop every script shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from .envs.vector import CBTSessionVectorEnv
from .transcript import Transcript


class Therapist(Protocol):
    def act(self, transcripts: Sequence[Transcript]) -> list[str]: ...


@dataclass(frozen=True)
class EpisodeSpec:
    """Which session to run: a seed, and optionally a fixed profile and attitude."""

    seed: int
    profile_id: str | None = None
    attitude: str | None = None

    @property
    def key(self) -> str:
        return f"{self.profile_id or 'drawn'}|{self.attitude or 'profile'}|{self.seed}"

    def options(self) -> dict[str, Any]:
        opts = {}
        if self.profile_id:
            opts["profile_id"] = self.profile_id
        if self.attitude:
            opts["attitude"] = self.attitude
        return opts


@dataclass
class Episode:
    spec: EpisodeSpec
    transcript: Transcript
    rewards: list[float]
    components: list[dict[str, Any]]

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.spec.key,
            "seed": self.spec.seed,
            "profile_id": self.transcript.profile_id,
            "attitude": self.transcript.attitude,
            "reward": self.total_reward,
            "rewards": self.rewards,
            "components": self.components,
            "transcript": self.transcript.to_dict(),
        }


def run_episodes(
    therapist: Therapist,
    specs: Sequence[EpisodeSpec],
    batch_size: int = 16,
    on_step: Callable[[int], None] | None = None,
    **env_kwargs: Any,
) -> Iterator[Episode]:
    """Run ``specs`` in batches of sessions, yielding each batch's episodes as it finishes.

    Each step makes one therapist call, one patient call and one reward call for the
    whole batch; a batch runs until all its sessions have ended.
    """
    specs = list(specs)
    venv: CBTSessionVectorEnv | None = None
    for start in range(0, len(specs), batch_size):
        chunk = specs[start:start + batch_size]
        if venv is None or venv.num_envs != len(chunk):
            venv = CBTSessionVectorEnv(len(chunk), **env_kwargs)
        venv.reset(seed=[s.seed for s in chunk], options={"per_env": [s.options() for s in chunk]})
        rewards = [[] for _ in chunk]
        comps = [[] for _ in chunk]
        while not venv.done.all():
            running = ~venv.done
            idx = [j for j in range(len(chunk)) if running[j]]
            said = therapist.act([venv.transcripts[j] for j in idx])
            actions = [""] * len(chunk)
            for j, a in zip(idx, said):
                actions[j] = a
            _, r, _, _, _ = venv.step(actions)
            for j in idx:
                rewards[j].append(float(r[j]))
                comps[j].append(venv.env_infos[j].get("reward_components", {}))
            if on_step:
                on_step(len(idx))
        for j, spec in enumerate(chunk):
            yield Episode(spec, venv.transcripts[j].copy(), rewards[j], comps[j])
