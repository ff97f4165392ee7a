"""Protocol ``cbt_qa``: CBT-LLM's single-turn questions (Na 2024), answers scored against reference answers.

Each question is a client's short post about a problem; every variant answers it once (its system
prompt, then the question as the user's message; ``cbt_qa_max_new_tokens`` tokens, the run's
decoding otherwise). Each answer is scored against the question's reference answer with BLEU,
chrF, METEOR and BERTScore (:mod:`cbtgym.benchmark.text_metrics`, which says how each is computed)
and judged for CBT-LLM's five parts (:mod:`rewards.structure`: ``cbt_qa_structure_judge``, the
embedded MiniLM judge or an LLM judge). The report gives each variant's mean [95% bootstrap CI];
``results.csv`` has one row per answer; ``summary.json`` adds corpus BLEU and chrF per variant.

For human rating, ``rating.csv`` (variant-blinded, shuffled answers with empty relevance /
structure / helpfulness columns) and ``rating_key.csv`` are written to the protocol folder
(:mod:`cbtgym.benchmark.rating_sheet`).

Question file format: JSONL, one object per line, or CSV with a header; ``question`` and
``reference`` are required, ``id`` is optional (default: the line number). The shipped
``data/cbt_qa_example.jsonl`` has 15 questions with five-part references written for cbtgym::

    {"id": "qa00", "question": "I keep failing my maths exams ...", "reference": "It sounds exhausting to ..."}

Resume: answers are kept in ``answers.jsonl`` per (variant, question); a re-run scores only the missing ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..jsonl import JsonlWriter, read_jsonl
from .analysis import mean_ci
from .protocols import generate_for, load_text_records
from .registry import ProtocolContext, ProtocolOutput

NAME = "cbt_qa"
EXAMPLE_FILE = Path(__file__).with_name("data") / "cbt_qa_example.jsonl"
#: Metric key -> (report column, what it is).
METRICS: dict[str, tuple[str, str]] = {
    "bleu": ("BLEU", "sacrebleu sentence BLEU against the reference, 0-100"),
    "chrf": ("chrF", "sacrebleu sentence chrF, 0-100"),
    "meteor": ("METEOR", "nltk METEOR with exact and stem matches only (no WordNet synonyms), 0-1"),
    "bertscore_f1": ("BERTScore F1", "BERTScore over all-MiniLM-L6-v2 token embeddings (idf off, not rescaled), 0-1"),
    "structure_count": ("parts (0-5)", "CBT-LLM parts the structure judge finds in the answer"),
}


def load_questions(path: str | Path = EXAMPLE_FILE, limit: int = 0) -> list[dict[str, str]]:
    """``{"id", "question", "reference"}`` items of a question file (the first ``limit``; 0: all)."""
    items = load_text_records(path, ("question", "reference"), "cbt_qa file")
    return items[:limit] if limit > 0 else items


def conversation(system: str, question: str) -> list[dict[str, str]]:
    """What a variant answers in: its system prompt, then the client's question."""
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def structure_judge(ctx: ProtocolContext) -> Any:
    """The configured structure judge: the shared embedded one, or the LLM judge on ``ctx.pool``'s backend
    (``judge_attempts``, ``judge_cache`` and ``judge_max_new_tokens`` apply to it as to the episode judges)."""
    from rewards.factory import EMBEDDED, make_judge

    from .runner import backend_spec

    spec = backend_spec(ctx.cfg.cbt_qa_structure_judge)
    if spec == EMBEDDED:
        return make_judge("structure", EMBEDDED)
    from ..backends.base import Sampling

    options: dict[str, Any] = dict(max_attempts=ctx.cfg.judge_attempts,
                                   cache=ctx.out_dir.parent / "judge_cache.sqlite" if ctx.cfg.judge_cache else None)
    if ctx.cfg.judge_max_new_tokens:
        options["sampling"] = Sampling(max_new_tokens=ctx.cfg.judge_max_new_tokens)
    return make_judge("structure", ctx.pool.get(spec), **options)


def score_answers(items: Sequence[dict[str, str]], answers: Sequence[str], judge: Any) -> list[dict[str, Any]]:
    """Per answer: the reference scores, each part's presence (1/0, ``None`` when the judge did not parse) and the count."""
    from rewards.structure import PARTS

    from .text_metrics import reference_scores

    scores = reference_scores(list(answers), [it["reference"] for it in items])
    labels = judge.judge(list(answers), [it["question"] for it in items])
    out = []
    for s, lab in zip(scores, labels):
        parts = {f"part_{p}": None if lab.present is None else float(lab.present[p]) for p in PARTS}
        out.append({**s, **parts, "structure_count": lab.count, "structure_parse_failed": lab.parse_failed})
    return out


def run(ctx: ProtocolContext) -> ProtocolOutput:
    """Answer, score and report every question for every variant (resuming from ``answers.jsonl``)."""
    from tqdm import tqdm

    items = load_questions(ctx.cfg.cbt_qa_file or EXAMPLE_FILE, ctx.cfg.cbt_qa_limit)
    path = ctx.out_dir / "answers.jsonl"
    done = {(r["variant"], r["key"]): r for r in read_jsonl(path)} if path.exists() else {}
    todo = [(v, it) for v in ctx.variants for it in items if (v.name, it["id"]) not in done]
    if todo:
        judge = structure_judge(ctx)
        sampling = ctx.sampling.with_(max_new_tokens=ctx.cfg.cbt_qa_max_new_tokens)
        chunks = [todo[i : i + ctx.cfg.batch_size] for i in range(0, len(todo), ctx.cfg.batch_size)]
        with JsonlWriter(path) as out:
            for chunk in tqdm(chunks, desc=NAME, unit="batch", disable=len(chunks) < 2):
                convs = [(v.name, conversation(v.system_prompt(), it["question"])) for v, it in chunk]
                answers = generate_for(ctx.therapists, convs, sampling, ctx.meter)
                for (v, it), answer, s in zip(chunk, answers, score_answers([it for _, it in chunk], answers, judge)):
                    done[(v.name, it["id"])] = {"protocol": NAME, "variant": v.name, "key": it["id"], "question": it["question"],
                                                "reference": it["reference"], "answer": answer, **s}
                    out.write(done[(v.name, it["id"])])
        ctx.log(f"[{NAME}] {len(todo)} answers scored with {judge!r}")
    rows = [done[(v.name, it["id"])] for v in ctx.variants for it in items]
    return report(ctx, rows, items)


def report(ctx: ProtocolContext, rows: Sequence[dict[str, Any]], items: Sequence[dict[str, str]]) -> ProtocolOutput:
    """The table, report section, plot, rating sheet and summary of the scored answers."""
    from rewards.structure import PART_TITLES, PARTS

    from .rating_sheet import write_rating_sheet
    from .report import _md_table, fmt
    from .text_metrics import corpus_bleu_chrf

    order = [v.name for v in ctx.variants]
    mine = {v: [r for r in rows if r["variant"] == v] for v in order}
    columns = {**{k: c for k, (c, _) in METRICS.items()}, **{f"part_{p}": PART_TITLES[p] for p in PARTS}}
    table = {v: {k: mean_ci([r[k] for r in rs]) for k in columns} for v, rs in mine.items()}
    corpus = {v: corpus_bleu_chrf([r["answer"] for r in rs], [[r["reference"]] for r in rs]) for v, rs in mine.items() if rs}
    unparsed = {v: sum(bool(r["structure_parse_failed"]) for r in rs) for v, rs in mine.items()}
    sheet, key = write_rating_sheet(rows, ctx.out_dir, seed=ctx.cfg.cbt_qa_rating_seed)
    judge = ctx.cfg.cbt_qa_structure_judge
    lines = [f"## CBT-LLM questions (cbt_qa): answers against reference answers ({len(items)} questions; mean [95% CI])", ""]
    lines += [_md_table(["variant", *[c for k, (c, _) in METRICS.items()], "corpus BLEU", "corpus chrF"],
                        [[v, *[fmt(table[v][k]) for k in METRICS], f"{corpus[v]['bleu']:.2f}", f"{corpus[v]['chrf']:.2f}"]
                         for v in order if v in corpus]), ""]
    lines += [f"- **{c}**: {what}" for c, what in METRICS.values()]
    lines += ["", f"Share of answers with each part (structure judge: `{judge}`"
              + (f"; unparsed: {sum(unparsed.values())}" if any(unparsed.values()) else "") + "):", ""]
    lines += [_md_table(["variant", *[PART_TITLES[p] for p in PARTS]], [[v, *[fmt(table[v][f"part_{p}"]) for p in PARTS]] for v in order]), ""]
    lines += [f"Human rating: `{NAME}/{sheet.name}` (answers blinded and shuffled; rate relevance, structure and helpfulness 1-5), "
              f"key in `{NAME}/{key.name}`.", ""]
    plot = _plot(ctx.out_dir, order, table)
    return ProtocolOutput(rows=list(rows), table=table, report=lines, plots=[plot],
                          summary={"questions": len(items), "structure_judge": str(judge), "structure_unparsed": unparsed,
                                   "corpus": corpus, "rating_sheet": str(sheet), "rating_key": str(key)})


def _plot(out_dir: Path, order: Sequence[str], table: dict[str, dict[str, dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import _bars

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 2.8), squeeze=False)
    for ax, (k, (title, _)) in zip(axes.flat, METRICS.items()):
        _bars(ax, order, [table[v][k] for v in order], title)
    fig.suptitle("cbt_qa: mean and 95% CI per variant", fontsize=10)
    fig.tight_layout()
    path = out_dir / "cbt_qa.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
