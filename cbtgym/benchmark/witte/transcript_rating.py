"""Witte et al.'s comparison on real transcripts: protocol ``transcript_rating``.

Given snippets of real sessions, the client LLM (``refinement_client``) rates, each on its own, three kinds of
next reply to a snippet: the human therapist's, each variant's (``llm:<variant>``) and the expert's revision
of the human reply along the three guidelines (``refinement_expert``, ``transcript_revision.txt``). The
client never learns who wrote a reply. Outcomes: mean rating with bootstrap CI per source, and paired over
snippets (Wilcoxon signed-rank and paired t test) each variant against the human reply and the revision, and
the revision against the human reply. Unparsed ratings are counted and left out; an empty revision is not
rated (counted).

Snippet file (``transcript_file``; default the shipped example ``data/transcript_snippets_example.jsonl``, six
snippets written for cbtgym): JSONL, one object per line::

    {"id": "ts01", "client": "A 29-year-old accountant with panic attacks.",
     "dialogue": [{"speaker": "therapist", "text": "What brings you in?"}, {"speaker": "client", "text": "..."}],
     "therapist": "What the human therapist said next."}

``dialogue`` (required): the turns before the reply, oldest first, ending with the client's; ``speaker`` is
``therapist`` or ``client`` (``patient`` is read as ``client``). ``therapist`` (required): the human reply.
``id`` (optional, unique; default ``line<N>``) and ``client`` (optional: who the client is, one sentence).

Resumes: ``replies.jsonl`` keeps every reply once written (revisions and variant replies are not
regenerated), ``ratings.jsonl`` every rating.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from ...jsonl import JsonlWriter, iter_jsonl_objects, read_jsonl
from ...patients.llm_patient import RATING_SAMPLING, parse_rating
from ...transcript import Transcript
from ..analysis import mean_ci
from ..protocols import generate_for
from ..registry import ProtocolContext, ProtocolOutput
from .roles import Roles, chosen_variants, reply_rating_request, revision_request
from .stats import paired_tests

NAME = "transcript_rating"
EXAMPLE_SNIPPETS = Path(__file__).resolve().parents[1] / "data" / "transcript_snippets_example.jsonl"
HUMAN, REVISION = "human", "expert_revision"
SPEAKERS = {"therapist": "therapist", "client": "patient", "patient": "patient"}


def load_snippets(path: str | Path) -> list[dict[str, Any]]:
    """Snippets of a JSONL file (format: the module docstring); errors name the line and the field.

    Returns:
        ``{"id", "client", "dialogue" (a Transcript), "therapist"}`` per snippet, in file order.
    """
    path = Path(path)
    out, seen = [], set()
    for n, row in iter_jsonl_objects(path):
        where = f"{path}:{n}"
        turns = row.get("dialogue")
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{where}: 'dialogue' must be a non-empty list of {{speaker, text}} turns")
        dialogue = Transcript(str(row.get("id") or f"line{n}"), "active")
        for i, turn in enumerate(turns):
            speaker = SPEAKERS.get(str(turn.get("speaker", "")).lower()) if isinstance(turn, dict) else None
            if speaker is None or not isinstance(turn.get("text"), str) or not turn["text"].strip():
                raise ValueError(f"{where}: dialogue[{i}] needs 'speaker' (therapist or client) and a non-empty 'text'")
            dialogue.add(speaker, turn["text"].strip())
        if dialogue.turns[-1].speaker != "patient":
            raise ValueError(f"{where}: the dialogue must end with the client's turn (the therapist's reply follows it)")
        if not isinstance(row.get("therapist"), str) or not row["therapist"].strip():
            raise ValueError(f"{where}: field 'therapist' (the human therapist's next reply) is missing or empty")
        if dialogue.profile_id in seen:
            raise ValueError(f"{where}: id {dialogue.profile_id!r} appears twice; ids must be unique")
        seen.add(dialogue.profile_id)
        client = row.get("client") or ""
        if not isinstance(client, str):
            raise ValueError(f"{where}: 'client' must be a sentence about the client (or left out)")
        out.append({"id": dialogue.profile_id, "client": client.strip(), "dialogue": dialogue, "therapist": row["therapist"].strip()})
    if not out:
        raise ValueError(f"{path}: no snippets")
    return out


def _key(snippet: dict[str, Any], source: str) -> str:
    return f"{snippet['id']}|{source}"


def write_replies(ctx: ProtocolContext, snippets: Sequence[dict[str, Any]], sources: Sequence[str], roles: Roles,
                  done: dict[str, dict], out: JsonlWriter) -> None:
    """The reply of every snippet x source not yet in ``done``: human replies as given, revisions by the expert,
    variant replies by the therapists (one call per model)."""
    by_name = {v.name: v for v in ctx.variants}
    todo = [(s, src) for s in snippets for src in sources if _key(s, src) not in done]
    revise = [s for s, src in todo if src == REVISION]
    texts = dict(zip((_key(s, REVISION) for s in revise), roles.ask_expert([revision_request(s["dialogue"], s["therapist"]) for s in revise])))
    llm = [(s, src) for s, src in todo if src.startswith("llm:")]
    convs = [(src[4:], s["dialogue"].as_chat("therapist", by_name[src[4:]].system_prompt())) for s, src in llm]
    texts.update(zip((_key(s, src) for s, src in llm), generate_for(ctx.therapists, convs, ctx.sampling, ctx.meter)))
    for s, src in todo:
        rec = {"key": _key(s, src), "snippet": s["id"], "source": src,
               "reply": s["therapist"] if src == HUMAN else texts[_key(s, src)]}
        out.write(rec)
        done[rec["key"]] = rec


def write_ratings(snippets: Sequence[dict[str, Any]], sources: Sequence[str], replies: dict[str, dict], roles: Roles,
                  done: dict[str, dict], out: JsonlWriter) -> None:
    """The client's rating of every reply not yet rated (one call); an empty reply gets none."""
    todo = [(s, src) for s in snippets for src in sources if _key(s, src) not in done]
    asked = [(s, src) for s, src in todo if replies[_key(s, src)]["reply"].strip()]
    answers = roles.client.generate([reply_rating_request(s["dialogue"], replies[_key(s, src)]["reply"], s["client"]) for s, src in asked],
                                    RATING_SAMPLING) if asked else []
    said = {_key(s, src): a for (s, src), a in zip(asked, answers)}
    for s, src in todo:
        answer = said.get(_key(s, src))
        rating = None if answer is None else parse_rating(answer)
        rec = {"key": _key(s, src), "snippet": s["id"], "source": src, "satisfaction": rating, "empty_reply": answer is None,
               "unparsed": answer if answer is not None and rating is None else None}
        out.write(rec)
        done[rec["key"]] = rec


def run(ctx: ProtocolContext) -> ProtocolOutput:
    """The transcript-rating protocol (see the module docstring); resumes from ``ctx.out_dir``."""
    cfg = ctx.cfg
    snippets = load_snippets(cfg.transcript_file or EXAMPLE_SNIPPETS)
    snippets = snippets[:cfg.transcript_limit] if cfg.transcript_limit > 0 else snippets
    variants = [v.name for v in chosen_variants(ctx)]
    sources = [HUMAN, REVISION, *(f"llm:{v}" for v in variants)]
    roles = Roles.of(ctx)
    replies = {r["key"]: r for r in read_jsonl(ctx.out_dir / "replies.jsonl")}
    ratings = {r["key"]: r for r in read_jsonl(ctx.out_dir / "ratings.jsonl")}
    with tqdm(total=2, desc=NAME, unit="stage") as bar:
        with JsonlWriter(ctx.out_dir / "replies.jsonl") as out:
            write_replies(ctx, snippets, sources, roles, replies, out)
        bar.update()
        with JsonlWriter(ctx.out_dir / "ratings.jsonl") as out:
            write_ratings(snippets, sources, replies, roles, ratings, out)
        bar.update()
    return summarise(cfg, snippets, variants, replies, ratings, roles.costs())


def summarise(cfg: Any, snippets, variants: Sequence[str], replies, ratings, costs: dict[str, int]) -> ProtocolOutput:
    """Rows, the per-source table, the paired tests and the report section."""
    from ..report import _md_table

    names = {HUMAN: HUMAN, REVISION: REVISION, **{f"llm:{v}": v for v in variants}}
    values = {names[src]: [ratings[_key(s, src)]["satisfaction"] for s in snippets] for src in names}
    table = {name: {"satisfaction": mean_ci(vals)} for name, vals in values.items()}
    pairs = list(chain(((v, HUMAN) for v in variants), ((v, REVISION) for v in variants), [(REVISION, HUMAN)]))
    tests = {f"{a} - {b}": paired_tests(values[a], values[b]) for a, b in pairs}
    counts = {names[src]: {"unparsed": sum(ratings[_key(s, src)]["unparsed"] is not None for s in snippets),
                           "empty_reply": sum(ratings[_key(s, src)]["empty_reply"] for s in snippets)} for src in names}
    rows = [{"protocol": NAME, "variant": names[src], "key": _key(s, src), "snippet": s["id"], "source": src,
             "satisfaction": ratings[_key(s, src)]["satisfaction"], "rating_unparsed": ratings[_key(s, src)]["unparsed"] is not None,
             "reply": replies[_key(s, src)]["reply"]} for src in names for s in snippets]

    def cell(c: dict) -> str:
        return "n/a" if c["mean"] is None else f"{c['mean']:.1f} [{c['ci95'][0]:.1f}, {c['ci95'][1]:.1f}] (n={c['n']})"

    def p(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    report = ["## Real-transcript rating (Witte et al.)", "",
              f"{len(snippets)} snippet(s) from `{cfg.transcript_file or EXAMPLE_SNIPPETS.name}`; the client `{cfg.refinement_client}` "
              f"rates each next reply 0-100 on its own: the human therapist's, each variant's, and the expert's (`{cfg.refinement_expert}`) "
              "revision of the human reply.", "",
              _md_table(["reply by", "satisfaction", "unparsed", "empty"],
                        [[n, cell(table[n]["satisfaction"]), str(counts[n]["unparsed"]), str(counts[n]["empty_reply"])] for n in table]), "",
              "Paired over snippets: difference of means, Wilcoxon signed-rank and paired t test p-values (two-sided); "
              "n = snippets where both replies were rated.", "",
              _md_table(["contrast", "n", "mean diff", "Wilcoxon p", "paired t p", "note"],
                        [[k, str(t["n"]), "n/a" if t["mean_diff"] is None else f"{t['mean_diff']:+.2f}", p(t["wilcoxon_p"]),
                          p(t["ttest_p"]), t["note"]] for k, t in tests.items()]), "",
              f"- Client and expert cost: {', '.join(f'{k} {v}' for k, v in costs.items())} (this run; resumed work makes none).", ""]
    return ProtocolOutput(rows=rows, table=table, report=report, summary={"tests": tests, "counts": counts, "costs": costs,
                                                                           "snippets": len(snippets)})
