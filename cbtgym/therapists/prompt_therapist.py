"""A therapist that is only a prompt over a backend (the LLM4CBT baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..backends.base import Backend, Sampling
from ..transcript import Transcript

PROMPTS_DIR = Path(__file__).with_name("prompts")


def therapist_prompt(name_or_path: str) -> str:
    """A therapist system prompt by name (a file in ``prompts/``) or by path."""
    path = Path(name_or_path)
    if path.suffix == ".txt" and path.exists():
        return path.read_text().strip()
    candidate = PROMPTS_DIR / f"{name_or_path}.txt"
    if not candidate.exists():
        names = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise ValueError(f"unknown therapist prompt {name_or_path!r}: use one of {names} or a path to a .txt file")
    return candidate.read_text().strip()


class PromptTherapist:
    """Answers each session's last patient turn with ``backend`` under a system prompt.

    Args:
        backend: Any backend.
        prompt: Prompt name (``"llm4cbt"``, ``"naive"``, ...) or path to a ``.txt`` file.
        sampling: Decoding (default: greedy, 64 new tokens).
    """

    def __init__(self, backend: Backend, prompt: str = "llm4cbt", sampling: Sampling | None = None) -> None:
        self.backend = backend
        self.prompt_name = prompt
        self.system = therapist_prompt(prompt)
        self.sampling = sampling or Sampling(max_new_tokens=64)

    def conversations(self, transcripts: Sequence[Transcript]) -> list[list[dict[str, str]]]:
        return [t.as_chat("therapist", self.system) for t in transcripts]

    def act(self, transcripts: Sequence[Transcript], sampling: Sampling | None = None) -> list[str]:
        """One utterance per transcript, from one batched backend call."""
        texts = self.backend.generate(self.conversations(transcripts), sampling or self.sampling)
        return [t.strip() or "..." for t in texts]
