"""Protocol ``distortions``: can a therapist name the cognitive distortions in a client's thought?

Each variant (its system prompt, then ``prompts/distortions.txt`` with the thought fenced and the
13 labels of ``rewards/distortions/taxonomy.yaml`` with their definitions) answers for every thought
of the set. A reply is read into labels by :func:`rewards.distortions.llm_detector.parse_labels_reply`
(JSON or labels named in prose); a reply that names none usably (or more than ``MAX_LABELS``) is
*unparsed*: counted, and scored as wrong on every item metric. The reference detector
(``distortions_detector``, default the embedded MiniLM detector) is scored on the same thoughts as
a row of its own.

Thoughts: ``distortions_file`` ``''`` = ``bench/data/distortions.jsonl`` (client speech written for
cbtgym), ``'profiles'`` = the run's profiles whose automatic thoughts are labelled (``distortions``
field; the bank's are), or a JSONL path of ``{"text", "labels", "id"?}`` lines.

Per item: ``exact`` (predicted set = gold set), ``any_match`` (a shared label, or both empty), and
example-based ``precision``, ``recall`` and ``f1``; per variant: their means with bootstrap CIs, and
the unparsed share. ``summary.json`` adds micro and macro F1 over the parsed items. Records go to
``<output_dir>/distortions/records.jsonl``; a re-run asks only for what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rewards.calibration.data import spread
from rewards.calibration.metrics import multilabel_prf
from rewards.distortions.data import EVAL_FILE, LabelledThought, load_thoughts
from rewards.distortions.llm_detector import parse_labels_reply
from rewards.distortions.taxonomy import distortion_labels, render_definitions

from ..jsonl import JsonlWriter, read_jsonl
from ..llm import fence, render_prompt
from .analysis import mean_ci
from .protocols import generate_for
from .registry import ProtocolContext, ProtocolOutput

PROMPT_FILE = Path(__file__).with_name("prompts") / "distortions.txt"
#: Most labels an answer may give; an answer listing more is not an identification.
MAX_LABELS = 3
#: The row of the reference detector.
DETECTOR_ROW = "detector"
METRICS = ("exact", "any_match", "precision", "recall", "f1", "unparsed")
NO_DETECTOR = ("", "none", None)


def thoughts_for(source: str, profiles: Sequence[Any], limit: int) -> list[LabelledThought]:
    """The labelled thoughts of ``source`` (see the module doc), ``limit`` of them evenly spaced (0: all)."""
    if source == "profiles":
        items = [LabelledThought(" ".join(p.automatic_thoughts), tuple(p.distortions), p.id) for p in profiles if p.distortions]
        if not items:
            raise ValueError("distortions_file: 'profiles' needs profiles with a 'distortions' field (the bank's have one); "
                             "use --profiles bank:test or give a labelled file")
    else:
        items = load_thoughts(source or EVAL_FILE)
    items = [LabelledThought(x.text, x.labels, x.id or f"t{i:03d}") for i, x in enumerate(items)]
    return spread(items, limit or None)


def item_scores(gold: Sequence[str], pred: Sequence[str] | None) -> dict[str, float]:
    """Exact match, any match and example-based precision, recall and F1 of one item (all 0 when unparsed)."""
    if pred is None:
        return {"exact": 0.0, "any_match": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "unparsed": 1.0}
    g, p = set(gold), set(pred)
    hit = len(g & p)
    return {
        "exact": float(g == p),
        "any_match": float(bool(hit) or g == p),
        "precision": hit / len(p) if p else float(not g),
        "recall": hit / len(g) if g else float(not p),
        "f1": 2 * hit / (len(g) + len(p)) if g or p else 1.0,
        "unparsed": 0.0,
    }


def question(thought: str) -> str:
    """The therapist's task for one thought (``prompts/distortions.txt`` filled)."""
    return render_prompt(PROMPT_FILE, thought=fence(thought, "thought", notice=False), max_labels=MAX_LABELS,
                         definitions=render_definitions())


def _record(row: str, item: LabelledThought, pred: Sequence[str] | None, reply: str | None) -> dict[str, Any]:
    return {"protocol": "distortions", "variant": row, "key": item.id, "text": item.text, "gold": list(item.labels),
            "predicted": None if pred is None else list(pred), "reply": reply, **item_scores(item.labels, pred)}


def run(ctx: ProtocolContext) -> ProtocolOutput:
    """Every variant (and the reference detector) names the distortions of every thought; see the module doc."""
    from tqdm import tqdm

    cfg = ctx.cfg
    items = thoughts_for(cfg.distortions_file, ctx.profiles, cfg.distortions_limit)
    path = ctx.out_dir / "records.jsonl"
    done = {(r["variant"], r["key"]): r for r in read_jsonl(path)} if path.exists() else {}
    rows = [v.name for v in ctx.variants] + ([] if cfg.distortions_detector in NO_DETECTOR else [DETECTOR_ROW])
    sampling = ctx.sampling.with_(max_new_tokens=cfg.distortions_max_new_tokens)
    todo = [(v, x) for x in items for v in ctx.variants if (v.name, x.id) not in done]
    with JsonlWriter(path) as out, tqdm(total=len(todo), desc="distortions", unit="answer") as bar:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start:start + cfg.batch_size]
            convs = [(v.name, [{"role": "system", "content": v.system_prompt()}, {"role": "user", "content": question(x.text)}])
                     for v, x in batch]
            for (v, x), reply in zip(batch, generate_for(ctx.therapists, convs, sampling, ctx.meter)):
                parsed = parse_labels_reply(reply, MAX_LABELS)
                done[(v.name, x.id)] = _record(v.name, x, None if parsed is None else parsed[0], reply)
                out.write(done[(v.name, x.id)])
            bar.update(len(batch))
        missing = [x for x in items if DETECTOR_ROW in rows and (DETECTOR_ROW, x.id) not in done]
        if missing:
            from rewards.factory import make_judge

            ctx.log(f"distortions: reference detector {cfg.distortions_detector!r} on {len(missing)} thoughts")
            for x, found in zip(missing, make_judge("distortions", cfg.distortions_detector).detect([x.text for x in missing])):
                done[(DETECTOR_ROW, x.id)] = _record(DETECTOR_ROW, x, found.labels, found.raw)
                out.write(done[(DETECTOR_ROW, x.id)])
    records = [done[(row, x.id)] for row in rows for x in items]
    return summarise(records, rows, len(items), cfg)


def summarise(records: Sequence[dict[str, Any]], rows: Sequence[str], n_items: int, cfg: Any) -> ProtocolOutput:
    """The table (mean and CI of each item metric per row), micro/macro F1 and the report section."""
    table = {row: {m: mean_ci([r[m] for r in records if r["variant"] == row]) for m in METRICS} for row in rows}
    sets = {row: multilabel_prf([r["gold"] for r in records if r["variant"] == row],
                                [r["predicted"] for r in records if r["variant"] == row], distortion_labels()) for row in rows}
    overall = {row: {k: sets[row][k] for k in ("micro_f1", "macro_f1", "scored", "unparsed")} for row in rows}

    def cell(c: dict) -> str:
        return "n/a" if c["mean"] is None else f"{c['mean']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    source = cfg.distortions_file or "bench/data/distortions.jsonl"
    report = [
        "## Cognitive distortions", "",
        f"Each variant names the distortions (13 Beck/Burns labels) of {n_items} client thoughts from {source}; "
        f"`{DETECTOR_ROW}` is the reference detector ({cfg.distortions_detector}) on the same thoughts. Unparsed answers "
        "score 0. Means with 95% bootstrap CIs; micro/macro F1 over the parsed answers.", "",
        "| variant | exact | any match | recall | F1 | unparsed | micro F1 | macro F1 |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {row} | {cell(table[row]['exact'])} | {cell(table[row]['any_match'])} | {cell(table[row]['recall'])} | "
          f"{cell(table[row]['f1'])} | {num(table[row]['unparsed']['mean'])} | {num(overall[row]['micro_f1'])} | "
          f"{num(overall[row]['macro_f1'])} |" for row in rows],
    ]
    rows_csv = [{k: (", ".join(v) if isinstance(v, list) else v) for k, v in r.items() if k not in ("reply", "text")} for r in records]
    return ProtocolOutput(rows=rows_csv, table=table, report=report,
                          summary={"thoughts": n_items, "source": source, "sets": overall})
