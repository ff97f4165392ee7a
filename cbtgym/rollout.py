"""Run many sessions with a batched therapist: the loop every script shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from .envs.sessions import EpisodeSpec, SessionBatch
from .transcript import Transcript

__all__ = ["Act", "Episode", "EpisodeSpec", "Therapist", "play_batch", "play_out", "run_episodes"]

#: The therapist of :func:`play_batch`: the indices of the running sessions and their transcripts -> one utterance each.
Act = Callable[[Sequence[int], Sequence[Transcript]], Sequence[str]]


class Therapist(Protocol):
    def act(self, transcripts: Sequence[Transcript]) -> list[str]: ...


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


def play_batch(batch: SessionBatch, specs: Sequence[EpisodeSpec], act: Act,
               on_step: Callable[[int], None] | None = None, memories: Sequence[Any] | None = None) -> list[Episode]:
    """Start ``specs`` in ``batch`` and step them until all have ended (:func:`play_out`);
    ``memories``: each patient's course memory (see :meth:`SessionBatch.reset`)."""
    sessions = batch.reset(specs, memories=memories)
    rewards, comps = play_out(batch, act, on_step)
    return [Episode(spec, s.transcript.copy(), rewards[j], comps[j]) for j, (spec, s) in enumerate(zip(specs, sessions))]


def play_out(batch: SessionBatch, act: Act,
             on_step: Callable[[int], None] | None = None) -> tuple[list[list[float]], list[list[dict[str, Any]]]]:
    """Step every running session of ``batch`` until all have ended: the one rollout loop.

    Each step makes one ``act`` call for the running sessions (``act(indices, transcripts)``,
    indices into ``batch.sessions``), then one patient call and one reward call for the whole
    batch; ``on_step`` gets the number of sessions stepped. Works as well on a batch of forks
    taken mid-episode (:meth:`SessionBatch.fork`). Returns each session's step rewards and
    reward components.
    """
    sessions = batch.sessions
    rewards: list[list[float]] = [[] for _ in sessions]
    comps: list[list[dict[str, Any]]] = [[] for _ in sessions]
    while True:
        idx = [j for j, s in enumerate(sessions) if s is not None and not s.done]
        if not idx:
            return rewards, comps
        actions: list[str | None] = [None] * len(sessions)
        for j, a in zip(idx, act(idx, [sessions[j].transcript for j in idx])):
            actions[j] = a
        results = batch.step(actions)
        for j in idx:
            rewards[j].append(float(results[j].reward.value))
            comps[j].append(dict(results[j].reward.components))
        if on_step:
            on_step(len(idx))


def run_episodes(
    therapist: Therapist,
    specs: Sequence[EpisodeSpec],
    batch_size: int = 16,
    on_step: Callable[[int], None] | None = None,
    batch: SessionBatch | None = None,
    **env_kwargs: Any,
) -> Iterator[Episode]:
    """Run ``specs`` in batches of sessions, yielding each batch's episodes as it finishes.

    Each step makes one therapist call, one patient call and one reward call for the
    whole batch; a batch runs until all its sessions have ended. ``env_kwargs`` are
    :class:`~cbtgym.envs.cbt_session.CBTSessionEnv`'s arguments; ``batch``, when given, is a
    :class:`SessionBatch` built from them already (its patient and reward are reused).
    """
    specs = list(specs)
    batch = batch or (SessionBatch.from_kwargs(**env_kwargs) if specs else None)
    for start in range(0, len(specs), batch_size):
        chunk = specs[start:start + batch_size]
        yield from play_batch(batch, chunk, lambda _, transcripts: therapist.act(transcripts), on_step)

