"""A registered benchmark protocol for the registry test: each variant answers one prompt; resumes from its file."""

from __future__ import annotations

from cbtgym.benchmark.analysis import mean_ci
from cbtgym.benchmark.protocols import generate_for
from cbtgym.benchmark.registry import ProtocolContext, ProtocolOutput
from cbtgym.jsonl import JsonlWriter, read_jsonl

PROMPT = [{"role": "user", "content": "How do I start?"}]


def run(ctx: ProtocolContext) -> ProtocolOutput:
    path = ctx.out_dir / "replies.jsonl"
    done = {r["variant"]: r for r in read_jsonl(path)} if path.exists() else {}
    todo = [v.name for v in ctx.variants if v.name not in done]
    with JsonlWriter(path) as out:
        for name, text in zip(todo, generate_for(ctx.therapists, [(n, PROMPT) for n in todo], ctx.sampling, ctx.meter)):
            done[name] = {"protocol": "toy", "variant": name, "words": len(text.split())}
            out.write(done[name])
    rows = [done[v.name] for v in ctx.variants]
    table = {r["variant"]: {"words": mean_ci([r["words"]])} for r in rows}
    return ProtocolOutput(rows=rows, table=table, report=["## Toy protocol", "", *[f"- {r['variant']}: {r['words']} words" for r in rows]],
                          summary={"prompt": PROMPT[0]["content"]})
