"""Supervised examples (prompt -> therapist turn) from transcripts, conversations or scored candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..jsonl import read_jsonl
from ..transcript import Transcript


def examples_from_transcript(transcript: Transcript, system_prompt: str) -> list[dict[str, Any]]:
    """One prompt-completion example per therapist turn after the opening; patient turns are only prompt."""
    out = []
    therapist_idx = [i for i, t in enumerate(transcript.turns) if t.speaker == "therapist"][1:]
    for i in therapist_idx:
        prefix = Transcript(transcript.profile_id, transcript.attitude, transcript.turns[:i])
        out.append({"prompt": prefix.as_chat("therapist", system_prompt),
                    "completion": [{"role": "assistant", "content": transcript.turns[i].text}]})
    return out


def examples_from_messages(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One example per assistant message of a chat conversation (the therapist is the assistant)."""
    return [{"prompt": messages[:i], "completion": [messages[i]]}
            for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]


def load_sft_examples(path: str | Path, system_prompt: str) -> list[dict[str, Any]]:
    """Read a JSONL of episodes (``cbtgym simulate`` output: ``{"transcript": ...}``) or of
    conversations (``{"messages": [...]}``); errors name the line and the expected fields."""
    examples: list[dict[str, Any]] = []
    for n, rec in enumerate(read_jsonl(path), 1):
        if "transcript" in rec:
            examples += examples_from_transcript(Transcript.from_dict(rec["transcript"]), system_prompt)
        elif "messages" in rec:
            examples += examples_from_messages(rec["messages"])
        else:
            raise ValueError(f"{path}:{n}: expected a 'transcript' (cbtgym simulate output) or 'messages' field")
    if not examples:
        raise ValueError(f"{path}: no therapist turns to learn from")
    return examples


def best_of_k_examples(candidates_path: str | Path, min_score: float) -> list[dict[str, Any]]:
    """The best candidate per state as the target, when it scores at least ``min_score``
    (rejection-sampling fine-tuning: the policy plus the judge act as the teacher)."""
    out = []
    for rec in read_jsonl(candidates_path):
        for st in rec["states"]:
            best = max(range(len(st["scores"])), key=lambda i: st["scores"][i])
            if st["scores"][best] >= min_score:
                out.append({"prompt": st["prompt"], "completion": [{"role": "assistant", "content": st["candidates"][best]}]})
    return out


def dedupe(examples: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for ex in examples:
        key = repr((ex["prompt"], ex["completion"]))
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out
