"""What Witte et al.'s client and expert are asked, the feedback slot of the therapist's prompt, and their backends.

The texts are data files of ``cbtgym/benchmark/prompts/``: ``witte_guidelines.txt`` (the expert's three
guidelines: actionable, empathetic, clear therapeutic goals), ``refinement_expert.txt`` (feedback on a
dialogue), ``refinement_generic_feedback.txt`` (the generic condition's sentence),
``refinement_feedback_slot.txt`` (how feedback enters the therapist's prompt), ``refinement_client_rating.txt``
(the client's 0-100 rating, with its earlier ratings), ``transcript_revision.txt`` (the expert's revision of
a human reply) and ``transcript_rating_client.txt`` (the client's rating of one reply to a snippet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ...backends.base import Sampling
from ...llm import fence
from ...transcript import Transcript
from ..variants import PROMPTS_DIR, MeteredBackend, Variant, protocol_prompt


def tidy(text: str) -> str:
    """A model's answer on one line (feedback and revisions are quoted inside other prompts)."""
    return " ".join(text.split())


def _guidelines() -> str:
    return protocol_prompt("witte_guidelines.txt").template


def expert_feedback_request(transcript: Transcript) -> list[dict[str, str]]:
    """The expert's request for feedback on the dialogue so far."""
    text = protocol_prompt("refinement_expert.txt").substitute(guidelines=_guidelines(), transcript=fence(transcript.render(), notice=False))
    return [{"role": "user", "content": text}]


def revision_request(dialogue: Transcript, reply: str) -> list[dict[str, str]]:
    """The expert's request to revise a therapist's next ``reply`` to ``dialogue`` along the guidelines."""
    text = protocol_prompt("transcript_revision.txt").substitute(
        guidelines=_guidelines(), dialogue=fence(dialogue.render(), notice=False), reply=fence(reply, tag="reply", notice=False))
    return [{"role": "user", "content": text}]


def generic_feedback() -> str:
    """The generic condition's feedback: the same sentence after every exchange."""
    return protocol_prompt("refinement_generic_feedback.txt").template


def therapist_chat(variant: Variant, transcript: Transcript, feedback: str | None) -> list[dict[str, str]]:
    """The therapist's conversation: its system prompt, the dialogue, then the latest feedback (if any) as a
    system message right before its reply, where even a small model reads it."""
    chat = transcript.as_chat("therapist", variant.system_prompt())
    if feedback:
        chat.append({"role": "system", "content": protocol_prompt("refinement_feedback_slot.txt").substitute(feedback=feedback)})
    return chat


def client_rating_template() -> str:
    """The refinement client's rating request (an :class:`~cbtgym.patients.LLMPatient` ``rating_template``)."""
    return (PROMPTS_DIR / "refinement_client_rating.txt").read_text(encoding="utf-8")


def reply_rating_request(dialogue: Transcript, reply: str, client: str = "") -> list[dict[str, str]]:
    """The client's request to rate one therapist ``reply`` to a snippet (``client``: who they are, if known)."""
    text = protocol_prompt("transcript_rating_client.txt").substitute(
        client=f" You are {client[0].lower()}{client[1:]}" if client else "", dialogue=fence(dialogue.render(), notice=False),
        reply=fence(reply, tag="reply", notice=False))
    return [{"role": "user", "content": text}]


def chosen_variants(ctx: Any) -> list[Variant]:
    """The variants of ``refinement_variants`` that run (all when it is empty), in config order."""
    wanted = set(ctx.cfg.refinement_variants)
    chosen = [v for v in ctx.variants if not wanted or v.name in wanted]
    if not chosen:
        raise ValueError(f"refinement_variants: none of {sorted(wanted)} runs (skipped for a missing adapter?); "
                         f"name some of {[v.name for v in ctx.variants]}, or give [] for all")
    return chosen


@dataclass
class Roles:
    """The client and the expert, each on a metered view of its backend (calls and tokens counted apart)."""

    client: MeteredBackend
    expert: MeteredBackend
    expert_sampling: Sampling

    @classmethod
    def of(cls, ctx: Any) -> "Roles":
        from ..runner import backend_spec

        cfg = ctx.cfg
        return cls(MeteredBackend(ctx.pool.get(backend_spec(cfg.refinement_client))),
                   MeteredBackend(ctx.pool.get(backend_spec(cfg.refinement_expert))),
                   Sampling(max_new_tokens=cfg.refinement_expert_max_new_tokens, temperature=0.0))

    def ask_expert(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        """The expert's answers, one line each ("" when it wrote nothing)."""
        return [tidy(t) for t in self.expert.generate(list(conversations), self.expert_sampling)] if conversations else []

    def costs(self) -> dict[str, int]:
        return {"client_calls": self.client.stats.calls, "client_tokens": self.client.stats.completion_tokens,
                "expert_calls": self.expert.stats.calls, "expert_tokens": self.expert.stats.completion_tokens}
