"""The four protocols of the benchmark, each resumable (one JSONL file per protocol and variant).

* :func:`run_sessions`: simulated sessions (LLM4CBT): every variant meets the same profiles,
  attitudes and seeds; the sessions of all variants are stepped together (per step one
  therapist call per model, one patient and one reward call for the whole batch, :func:`play`) and
  scored by :class:`~cbtgym.benchmark.judges.EpisodeJudges`.
* :func:`run_courses`: multi-session courses (Tahir): N sessions per patient; after each session
  the therapist writes a summary, which the next session's system prompt carries (``prompts/course_context.txt``); the ``course`` variant switches phase prompts
  (assessment, initial, middle, termination). Each session opens with ``cbtgym/envs/prompts/course_opening.txt``
  after the first (the summary request is ``cbtgym/envs/prompts/course_summary.txt``, shared with ``CBTCourse-v0``).
  The simulated patient remembers the course (:class:`~cbtgym.patients.course_memory.CourseMemory`, kept in
  each record's ``memory``): the layers it told stay open and it reports on the homework set last time.
* :func:`run_crisis_probes`: crisis probes (Moore et al., 2025): a patient utterance that
  discloses suicidal ideation, delusions, mania or asks for means, from
  ``rewards/safety/data/probes.jsonl``; the reply is checked against the gold crisis types.
* :func:`run_act_match`: act-label match with real therapists (LLM4CBT, Table 2): each variant
  answers the patient utterance of a (patient, human therapist) pair; both replies are labelled
  and compared by category (5 + oov) and by type (13 + oov).

Act-match file format (:func:`load_act_pairs`): JSONL, one object per line, or CSV with a header;
fields ``patient`` (the patient utterance) and ``therapist`` (what the human therapist said next)
are required, ``id`` is optional (default: the line number). Example:
``cbtgym/benchmark/data/act_match_example.jsonl`` (30 pairs written for cbtgym)::

    {"id": "am00", "patient": "I've been so anxious at work lately.", "therapist": "What goes through your mind when the anxiety hits?"}
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..backends.base import Backend, Sampling
from ..envs.course import COURSE_OPENING, summary_request
from ..envs.sessions import OPENING, SessionBatch
from ..jsonl import JsonlWriter, iter_jsonl_objects, read_jsonl
from ..patients import CourseMemory
from ..rollout import Episode, EpisodeSpec, play_batch
from ..transcript import Transcript
from .costs import count_tokens
from .judges import EpisodeJudges
from .variants import Variant

EXAMPLE_ACT_PAIRS = Path(__file__).with_name("data") / "act_match_example.jsonl"
#: Crisis types of Moore et al.'s stimuli: suicidal ideation, delusions, mania, requests for means.
MOORE_TYPES = ("suicidal_ideation", "psychosis", "mania", "means_request")


class TherapistMeter:
    """Per-variant therapist cost when variants share backend calls: calls joined, prompt tokens read, tokens generated.

    Tokens are counted with the backend's tokenizer when it has one (hf), else as words.
    """

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        self.prompt_tokens: dict[str, int] = {}

    def add(self, backend: Backend, variants: Sequence[str], texts: Sequence[str],
            conversations: Sequence[list[dict[str, str]]] = ()) -> None:
        counts = count_tokens(backend, conversations, texts)
        prompts, outputs = counts[:len(conversations)], counts[len(conversations):]
        for v in set(variants):
            self.calls[v] = self.calls.get(v, 0) + 1
        for v, n in zip(variants, outputs):
            self.tokens[v] = self.tokens.get(v, 0) + n
        for v, n in zip(variants, prompts):
            self.prompt_tokens[v] = self.prompt_tokens.get(v, 0) + n


def generate_for(therapists: Mapping[str, Backend], entries: Sequence[tuple[str, list[dict[str, str]]]], sampling: Sampling,
                 meter: TherapistMeter | None) -> list[str]:
    """Replies (stripped) for ``(variant name, conversation)`` entries: one call per model, whatever the variants."""
    by_model: dict[int, list[int]] = {}
    for i, (name, _) in enumerate(entries):
        by_model.setdefault(id(therapists[name]), []).append(i)
    texts = [""] * len(entries)
    for rows in by_model.values():
        backend = therapists[entries[rows[0]][0]]
        convs = [entries[i][1] for i in rows]
        out = backend.generate(convs, sampling)
        if meter is not None:
            meter.add(backend, [entries[i][0] for i in rows], out, convs)
        for i, t in zip(rows, out):
            texts[i] = t
    return [t.strip() or "..." for t in texts]


def episode_items(ep: Episode) -> dict[str, float | None]:
    """The embedded rubric's components, averaged over the session's steps (``episode_at``: its final value)."""
    out: dict[str, float | None] = {}
    for key in ("act", "structure", "at_progress", "satisfaction", "safety_ok"):
        vals = [c[key] for c in ep.components if c.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    out["episode_at"] = next((c["episode_at"] for c in reversed(ep.components) if c.get("episode_at") is not None), None)
    return out


def play(therapists: Mapping[str, Backend], entries: Sequence[tuple[str, str, EpisodeSpec]], sampling: Sampling,
         env_kwargs: dict[str, Any], meter: TherapistMeter | None = None,
         on_step: Callable[[int], None] | None = None, memories: Sequence[CourseMemory | None] | None = None) -> list[Episode]:
    """Sessions of several variants stepped together: per step one therapist call per model and one patient call.

    Each entry is ``(variant name, system prompt, spec)``; ``therapists`` maps variant names to backends.
    The loop of :func:`cbtgym.rollout.run_episodes` (:func:`~cbtgym.rollout.play_batch`), with the system
    prompt per session, so variants sharing a model share its calls, and all sessions share the patient's.
    ``memories``: what each entry's patient remembers of its course (see :meth:`SessionBatch.reset`).
    """
    def act(idx: Sequence[int], transcripts: Sequence[Transcript]) -> list[str]:
        return generate_for(therapists, [(entries[j][0], t.as_chat("therapist", entries[j][1])) for j, t in zip(idx, transcripts)],
                            sampling, meter)

    return play_batch(SessionBatch.from_kwargs(**env_kwargs), [spec for _, _, spec in entries], act, on_step, memories)


def progress(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar for a protocol's loop (hidden when a resumed run has nothing left to do)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=total == 0)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _profiles_of(episodes: Sequence[Episode], env_kwargs: dict[str, Any]) -> list[Any]:
    by_id = {p.id: p for p in env_kwargs["profiles"]}
    return [by_id[e.transcript.profile_id].with_attitude(e.transcript.attitude) for e in episodes]


def _record(variant: Variant, protocol: str, key: str, ep: Episode, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "key": key, "variant": variant.name, "protocol": protocol, "profile_id": ep.transcript.profile_id,
        "attitude": ep.transcript.attitude, "seed": ep.spec.seed, **extra, "reward": ep.total_reward,
        "rewards": ep.rewards, "items": episode_items(ep), "metrics": metrics, "ended_by": ep.transcript.ended_by,
        "transcript": ep.transcript.to_dict(),
    }


class _Files:
    """One append-only JSONL per variant under ``out_dir``, and the records already there."""

    def __init__(self, out_dir: str | Path, variants: Sequence[Variant]) -> None:
        self.paths = {v.name: Path(out_dir) / f"{v.name}.jsonl" for v in variants}
        self.done = {v: {r["key"]: r for r in read_jsonl(p)} for v, p in self.paths.items()}
        self.writers: dict[str, JsonlWriter] = {}

    def write(self, variant: str, record: dict[str, Any]) -> None:
        if variant not in self.writers:
            self.writers[variant] = JsonlWriter(self.paths[variant])
        self.writers[variant].write(record)
        self.done[variant][record["key"]] = record

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def __enter__(self) -> "_Files":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_sessions(variants: Sequence[Variant], therapists: Mapping[str, Backend], specs: Sequence[EpisodeSpec], out_dir: str | Path,
                 judges: EpisodeJudges, sampling: Sampling, *, batch_size: int = 64, meter: TherapistMeter | None = None,
                 **env_kwargs: Any) -> list[dict[str, Any]]:
    """Simulated sessions of every variant on ``specs`` (``therapists``: variant name -> backend; a model's variants share its calls).

    ``out_dir/<variant>.jsonl`` keeps each variant's episodes; those already there are not re-run.
    ``env_kwargs`` go to :class:`~cbtgym.envs.cbt_session.CBTSessionEnv` (its session core) and must hold ``profiles``
    as a list of :class:`PatientProfile`. Returns every record, variants in order, specs in order.
    """
    by_name = {v.name: v for v in variants}
    with _Files(out_dir, variants) as files:
        todo = [(v.name, v.system_prompt(), s) for v in variants for s in specs if s.key not in files.done[v.name]]
        bar = progress(len(todo), "sessions", "session")
        for chunk in _chunks(todo, batch_size):
            episodes = play(therapists, chunk, sampling, env_kwargs, meter, on_step=lambda k: bar.set_postfix_str(f"step {k}"))
            bar.update(len(chunk))
            metrics = judges.score([e.transcript for e in episodes], _profiles_of(episodes, env_kwargs))
            for (name, _, _), ep, m in zip(chunk, episodes, metrics):
                files.write(name, _record(by_name[name], "session", ep.spec.key, ep, m, session=1))
        bar.close()
        return [files.done[v.name][s.key] for v in variants for s in specs]


def course_key(spec: EpisodeSpec, session: int) -> str:
    return f"{spec.key}|s{session}"


def summary_conversation(transcript: Transcript) -> list[dict[str, str]]:
    """The request for a session summary (the therapist writes it, as in Tahir's pipeline)."""
    return [{"role": "user", "content": summary_request(transcript)}]


def run_courses(variants: Sequence[Variant], therapists: Mapping[str, Backend], specs: Sequence[EpisodeSpec], sessions: int, out_dir: str | Path,
                judges: EpisodeJudges, sampling: Sampling, summary_sampling: Sampling, *, batch_size: int = 64,
                meter: TherapistMeter | None = None, **env_kwargs: Any) -> list[dict[str, Any]]:
    """``sessions`` consecutive sessions per spec (a patient) and variant, each opened by the previous one's summary.

    Resumes session by session: session n of a patient runs when it is missing from
    ``out_dir/<variant>.jsonl``; the summary of session n-1 and the patient's memory after it are read
    from there. Each patient's memory is its own per variant: what one therapist reached stays open only
    in that therapist's course.
    """
    if sessions < 1:
        raise ValueError(f"course sessions must be >= 1 (got {sessions})")
    by_name = {v.name: v for v in variants}
    profiles = {p.id: p for p in env_kwargs["profiles"]}
    with _Files(out_dir, variants) as files:
        bar = progress(sum(course_key(s, n) not in files.done[v.name] for v in variants for s in specs for n in range(1, sessions + 1)),
                       "course sessions", "session")
        for n in range(1, sessions + 1):
            todo = []
            for v in variants:
                for s in specs:
                    if course_key(s, n) not in files.done[v.name]:
                        before = files.done[v.name][course_key(s, n - 1)] if n > 1 else None
                        memory = (CourseMemory.from_dict(before["memory"]) if before else
                                  CourseMemory(s.profile_id, s.attitude or profiles[s.profile_id].attitude, s.seed))
                        summary = before["summary"] if before else None
                        todo.append((v.name, v.system_prompt(n, sessions, summary), s, summary, memory))
            kwargs = dict(env_kwargs, opening=COURSE_OPENING) if n > 1 else env_kwargs
            for chunk in _chunks(todo, batch_size):
                episodes = play(therapists, [(name, system, s) for name, system, s, *_ in chunk], sampling, kwargs, meter,
                                memories=[memory if n > 1 else None for *_, memory in chunk],
                                on_step=lambda k: bar.set_postfix_str(f"session {n}, step {k}"))
                bar.update(len(chunk))
                metrics = judges.score([e.transcript for e in episodes], _profiles_of(episodes, env_kwargs))
                written = generate_for(therapists, [(name, summary_conversation(ep.transcript)) for (name, *_), ep in zip(chunk, episodes)],
                                       summary_sampling, meter)
                for (name, _, _, previous, memory), ep, m, summary in zip(chunk, episodes, metrics, written):
                    summary = " ".join(summary.split())
                    files.write(name, _record(by_name[name], "course", course_key(ep.spec, n), ep, m, session=n,
                                              previous_summary=previous, summary=summary,
                                              memory=memory.after(ep.transcript, summary).to_dict()))
        bar.close()
        return [files.done[v.name][course_key(s, n)] for v in variants for s in specs for n in range(1, sessions + 1)]


def load_crisis_probes(types: Sequence[str] = MOORE_TYPES, per_type: int = 4, path: str | Path | None = None) -> list[dict[str, Any]]:
    """Crisis stimuli from the safety probe file: up to ``per_type`` utterances per crisis type, in file order.

    Each probe is ``{"id", "patient", "types", "probe_type"}``; ``probe_type`` is the type of ``types``
    it was chosen for (an utterance counts for the first of ``types`` it carries).
    """
    from rewards.safety.findings import CRISIS_TYPES
    from rewards.safety.probes import PROBES, load_probes

    bad = [t for t in types if t not in CRISIS_TYPES]
    if bad:
        raise ValueError(f"crisis_types has unknown type(s) {bad}; choose from {list(CRISIS_TYPES)}")
    detect, _ = load_probes(path or PROBES)
    chosen: dict[str, list[dict[str, Any]]] = {t: [] for t in types}
    for item in detect:
        if not item["crisis"]:
            continue
        kind = next((t for t in types if t in item["types"]), None)
        if kind is not None and len(chosen[kind]) < per_type:
            chosen[kind].append({"id": item["id"], "patient": item["patient"], "types": list(item["types"]), "probe_type": kind})
    return [p for t in types for p in chosen[t]]


def probe_conversation(system: str, probe: dict[str, Any]) -> list[dict[str, str]]:
    """What a therapist answers a crisis probe in: its system prompt, the session opening, the probe's utterance."""
    return [{"role": "system", "content": system}, {"role": "assistant", "content": OPENING},
            {"role": "user", "content": probe["patient"]}]


def check_probe_replies(check_replies: Callable[..., list[Any]], probes: Sequence[dict[str, Any]],
                        replies: Sequence[str]) -> list[Any]:
    """``check_replies(patient_texts, replies, crises)`` (a reply checker's ``check``) against each probe's gold types."""
    from rewards.safety.findings import CrisisFinding

    if not probes:
        return []
    return check_replies([p["patient"] for p in probes], list(replies), [CrisisFinding.from_types(p["types"]) for p in probes])


def probe_record(probe: dict[str, Any], reply: str, check: Any, **extra: Any) -> dict[str, Any]:
    """One crisis-probe record (``extra`` right after ``key``): ``pass`` is 1.0/0.0, None when the checker could not tell."""
    return {"key": probe["id"], **extra, "probe_type": probe["probe_type"], "types": probe["types"],
            "patient": probe["patient"], "reply": reply,
            "pass": None if check.response_safe is None else float(check.response_safe),
            "violations": list(check.violations), "missing": list(check.missing)}


def run_crisis_probes(variants: Sequence[Variant], therapists: Mapping[str, Backend], probes: Sequence[dict[str, Any]], out_dir: str | Path,
                      judges: EpisodeJudges, sampling: Sampling, meter: TherapistMeter | None = None) -> list[dict[str, Any]]:
    """One reply per probe and variant (after the session opening; one call per model), checked against the gold crisis types."""
    with _Files(out_dir, variants) as files:
        todo = [(v, p) for v in variants for p in probes if p["id"] not in files.done[v.name]]
        bar = progress(len(todo), "crisis probes", "probe")  # one batched call: the bar shows it is under way
        convs = [(v.name, probe_conversation(v.system_prompt(), p)) for v, p in todo]
        replies = generate_for(therapists, convs, sampling, meter)
        checks = check_probe_replies(judges.check_replies, [p for _, p in todo], replies)
        for (v, p), reply, ch in zip(todo, replies, checks):
            files.write(v.name, probe_record(p, reply, ch, variant=v.name))
        bar.update(len(todo))
        bar.close()
        return [files.done[v.name][p["id"]] for v in variants for p in probes]


def checked_records(path: str | Path, rows: Iterable[tuple[int, Any]], required: Sequence[str],
                    what: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line, id, row)`` of a user file's rows: each an object whose ``required`` fields are non-empty text, with a
    unique ``id`` (default: ``line<n>``); errors name the file, the line and the field."""
    needs = " and ".join(f"'{f}'" for f in required)
    seen: set[str] = set()
    for n, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: expected an object with {needs}")
        for field in required:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{path}:{n}: field '{field}' is missing or empty; every {what} needs {needs} text")
        rid = str(row.get("id") or f"line{n}")
        if rid in seen:
            raise ValueError(f"{path}:{n}: id {rid!r} appears twice; ids must be unique")
        seen.add(rid)
        yield n, rid, row


def load_text_records(path: str | Path, fields: Sequence[str], what: str) -> list[dict[str, str]]:
    """Records with required text ``fields`` and an optional unique ``id`` from a JSONL or CSV (with a header) file.

    Args:
        path: The file (``.csv``: CSV with a header; anything else: JSONL, one object per line).
        fields: The fields every record needs, non-empty text; they are stripped.
        what: What the file holds, for the messages ("act-match file", "cbt_qa file").

    Returns:
        ``{"id", **fields}`` per record; ``id`` defaults to ``line<N>``.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: Naming the line and the field of a malformed record, a repeated id, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(fh), 2)]
    else:
        rows = list(iter_jsonl_objects(path))
    records = [{"id": rid, **{f: row[f].strip() for f in fields}} for _, rid, row in checked_records(path, rows, fields, f"record of a {what}")]
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def load_act_pairs(path: str | Path) -> list[dict[str, str]]:
    """(patient, human therapist) pairs from a JSONL or CSV file (format: the module docstring); errors name the line and the field."""
    return load_text_records(path, ("patient", "therapist"), "act-match file")


def run_act_match(variants: Sequence[Variant], therapists: Mapping[str, Backend], pairs: Sequence[dict[str, str]], out_dir: str | Path,
                  judges: EpisodeJudges, sampling: Sampling, meter: TherapistMeter | None = None) -> list[dict[str, Any]]:
    """Each pair's patient utterance answered by every variant (one call per model); labels compared with the human reply's."""
    with _Files(out_dir, variants) as files:
        todo = [(v, p) for v in variants for p in pairs if p["id"] not in files.done[v.name]]
        bar = progress(len(todo), "act match", "pair")  # one batched call: the bar shows it is under way
        convs = [(v.name, [{"role": "system", "content": v.system_prompt()}, {"role": "user", "content": p["patient"]}]) for v, p in todo]
        replies = generate_for(therapists, convs, sampling, meter)
        contexts = [p["patient"] for _, p in todo]
        labels = judges.label(replies + [p["therapist"] for _, p in todo], contexts + contexts) if todo else []
        model, human = labels[:len(todo)], labels[len(todo):]
        for (v, p), reply, m, h in zip(todo, replies, model, human):
            both = m.type is not None and h.type is not None
            files.write(v.name, {"key": p["id"], "variant": v.name, "patient": p["patient"], "human": p["therapist"],
                                 "reply": reply, "model_type": m.type, "model_category": m.category,
                                 "human_type": h.type, "human_category": h.category,
                                 "type_match": float(m.type == h.type) if both else None,
                                 "category_match": float(m.category == h.category) if both else None})
        bar.update(len(todo))
        bar.close()
        return [files.done[v.name][p["id"]] for v in variants for p in pairs]
