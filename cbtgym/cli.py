"""The ``cbtgym`` command line: simulate sessions, label acts, check safety, calibrate judges, validate profiles, build the W&B dashboard."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .jsonl import check_utterance_lengths


def _simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backends.factory import make_backend, spec_identity
    from .jsonl import JsonlWriter
    from .profiles import load_profiles
    from .resume import resume_keys, text_digest
    from .rollout import EpisodeSpec, run_episodes
    from .therapists import PromptTherapist, therapist_prompt

    specs = [EpisodeSpec(seed=args.seed + i, attitude=args.attitude) for i in range(args.episodes)]
    out = Path(args.out)
    # Everything that shapes an episode record besides its key (drawn|attitude|seed): a second run
    # into the same --out with any of these changed must not be taken for a resume.
    settings = {
        "therapist_backend": spec_identity(args.therapist_backend),
        "therapist_prompt": args.therapist_prompt,
        "therapist_prompt_text": therapist_prompt(args.therapist_prompt),
        "patient_backend": spec_identity(args.patient_backend),
        "profiles": args.profiles,
        "profiles_content": text_digest(json.dumps([p.to_dict() for p in load_profiles(args.profiles)], sort_keys=True)),
        "rounds": args.rounds,
        "reward": args.reward,
        "batch_size": args.batch_size,  # padded batches can change a model's greedy text
    }
    finished = resume_keys(out, settings, fresh=args.fresh,
                           fresh_hint="start a new one with --fresh (the old file is kept as <out>.bak)")
    todo = [s for s in specs if s.key not in finished]
    print(f"{len(specs) - len(todo)} of {len(specs)} episodes already in {out}; running {len(todo)}", file=sys.stderr)
    if not todo:
        return 0
    therapist_backend = make_backend(args.therapist_backend)
    patient_backend = None if args.patient_backend == "rule" else (
        therapist_backend if args.patient_backend == args.therapist_backend else make_backend(args.patient_backend)
    )
    therapist = PromptTherapist(therapist_backend, prompt=args.therapist_prompt)
    with JsonlWriter(out) as writer, tqdm(total=len(todo), desc="episodes", unit="ep") as bar:
        for ep in run_episodes(
            therapist, todo, batch_size=args.batch_size, profiles=args.profiles,
            patient="rule" if patient_backend is None else "llm", patient_backend=patient_backend,
            max_rounds=args.rounds, reward_fn=args.reward,
        ):
            record = ep.to_dict()
            record["therapist"] = {"backend": therapist_backend.name, "prompt": args.therapist_prompt}
            writer.write(record)
            bar.update(1)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from .backends.factory import make_backend
    from .therapists import PromptTherapist

    backend = make_backend("embedded")
    env = gym.make("CBTSession-v0", profiles=args.profiles, max_rounds=args.rounds)
    therapist = PromptTherapist(backend, prompt="llm4cbt")
    obs, info = env.reset(seed=args.seed)
    print(f"# profile {info['profile_id']} ({info['attitude']}); therapist: SmolLM2-135M-Instruct, llm4cbt prompt\n")
    print(obs)
    done = False
    while not done:
        action = therapist.act([env.unwrapped.transcript])[0]
        n = len(env.unwrapped.transcript.turns)
        obs, reward, terminated, truncated, info = env.step(action)
        for turn in env.unwrapped.transcript.turns[n:]:
            print(f"{turn.speaker.capitalize()}: {turn.text}")
        print(f"    [reward {reward:+.3f}  components {_fmt(info.get('reward_components', {}))}]")
        done = terminated or truncated
    print(f"\n# session ended by {env.unwrapped.transcript.ended_by}; patient satisfaction {info['satisfaction']}/100")
    return 0


def _fmt(components: dict) -> str:
    return ", ".join(f"{k}={v:.2f}" for k, v in components.items() if isinstance(v, (int, float)))


def _label(args: argparse.Namespace) -> int:
    from rewards.acts import label_file

    check_utterance_lengths(args.input, ("text", "context"))
    # label_file takes the --judge value itself and builds the classifier only after the
    # whole input has been validated, so a bad line fails before a model loads.
    n = label_file(args.input, args.out, args.judge)
    print(f"labelled {n} utterances with judge {args.judge!r} -> {args.out}", file=sys.stderr)
    return 0


def _safety(args: argparse.Namespace) -> int:
    from rewards.factory import make_judge
    from rewards.safety import read_safety_items, safety_file

    check_utterance_lengths(args.input, ("patient", "therapist"))
    items = read_safety_items(args.input)  # validate every line before a judge (possibly a model) is built
    detector = make_judge("crisis", args.judge)
    checker = make_judge("reply_check", args.judge, detector=detector)
    parts = _in_chunks(lambda i, o: safety_file(i, o, detector, checker), args.input, args.out, len(items), "lines")
    counts = {k: sum(c[k] for c in parts) for k in ("lines", "crisis", "replies", "unsafe", "unknown")}
    print(
        f"{counts['lines']} lines: {counts['crisis']} crisis, {counts['replies']} replies checked, "
        f"{counts['unsafe']} unsafe, {counts['unknown']} unknown -> {args.out}",
        file=sys.stderr,
    )
    return 0


#: Lines per call when a CLI job shows progress: large enough to keep the model batched.
CHUNK_LINES = 256


def _in_chunks(fn, in_path: str, out_path: str, total: int, unit: str) -> list:
    """Run ``fn(chunk_in, chunk_out)`` over the input in chunks of :data:`CHUNK_LINES` lines with a
    progress bar; the output appears only when every chunk is done (a failure leaves no half file)."""
    import shutil
    import tempfile

    from tqdm import tqdm

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The caller has validated the whole input (line numbers in errors refer to it, not to a chunk).
    lines = [ln for ln in Path(in_path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=total, desc=unit, unit="line") as bar:
        part = Path(tmp) / "out.jsonl"
        with part.open("w", encoding="utf-8") as acc:
            for start in range(0, max(len(lines), 1), CHUNK_LINES):
                chunk = lines[start:start + CHUNK_LINES]
                chunk_in, chunk_out = Path(tmp) / "in.jsonl", Path(tmp) / "chunk.jsonl"
                chunk_in.write_text("".join(ln + "\n" for ln in chunk), encoding="utf-8")
                results.append(fn(chunk_in, chunk_out))
                acc.write(chunk_out.read_text(encoding="utf-8"))
                bar.update(len(chunk))
        shutil.move(part, out)
    return results


def _calibrate(args: argparse.Namespace) -> int:
    from rewards.calibration import calibrate
    from rewards.calibration.report import render

    check_utterance_lengths(args.data, ("text", "context", "stimulus", "reply"))
    report = calibrate(args.judge, args.data, kind=args.kind, limit=args.limit)
    render(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report -> {out}", file=sys.stderr)
    return 0


def _validate_profiles(args: argparse.Namespace) -> int:
    from .profiles import load_profiles

    profiles = load_profiles(args.source)
    print(f"{len(profiles)} valid profiles in {args.source}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import os

    from .training.dashboard import build_workspace, definition

    workspace = build_workspace(args.entity, args.project, args.name, args.panels)
    online = not args.dry_run and bool(os.environ.get("WANDB_API_KEY"))
    if args.out or not online:
        text = json.dumps(definition(workspace), indent=2)
        if args.out:
            Path(args.out).write_text(text)
            print(f"dashboard definition ({sum(len(s.panels) for s in workspace.sections)} panels) -> {args.out}",
                  file=sys.stderr)
        else:
            print(text)
    if not online:
        why = "--dry-run" if args.dry_run else "no WANDB_API_KEY"
        print(f"dashboard: built, not saved ({why}); set WANDB_API_KEY and drop --dry-run to save it", file=sys.stderr)
        return 0
    workspace.save()
    print(f"dashboard saved: {workspace.url}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cbtgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run sessions with a prompt-only therapist and write transcripts (resumable)")
    sim.add_argument("--therapist-backend", default="embedded", help="backend spec: embedded, hf:<dir>, vllm:<dir>, openai:<url>#<model>")
    sim.add_argument("--therapist-prompt", default="llm4cbt", help="prompt name in cbtgym/therapists/prompts or a .txt path")
    sim.add_argument("--patient-backend", default="rule", help="'rule' for the rule-based patient, or a backend spec for the LLM patient")
    sim.add_argument("--profiles", default="bank:test", help="profile source: bank, bank:train, bank:test, llm4cbt, or a path")
    sim.add_argument("--attitude", choices=["active", "passive"], default=None, help="force an attitude (default: the profile's)")
    sim.add_argument("--episodes", type=int, default=8)
    sim.add_argument("--rounds", type=int, default=4, help="therapist turns per session")
    sim.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    sim.add_argument("--batch-size", type=int, default=16, help="sessions stepped together")
    sim.add_argument("--reward", default="rubric",
                     help="'rubric' (embedded proxy judge), 'composite', 'composite:<file.yaml>' or 'placeholder'")
    sim.add_argument("--out", required=True, help="JSONL output; re-running with the same settings skips episodes already there")
    sim.add_argument("--fresh", action="store_true",
                     help="start a new --out even if it holds episodes of other settings (the old file is kept as <out>.bak)")
    sim.set_defaults(fn=_simulate)

    demo = sub.add_parser("demo", help="one short session, embedded SmolLM2 therapist vs the rule-based patient, as a transcript")
    demo.add_argument("--profiles", default="bank:test")
    demo.add_argument("--rounds", type=int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(fn=_demo)

    lab = sub.add_parser("label", help="label therapist utterances with CBT act types (LLM4CBT taxonomy)")
    lab.add_argument("--in", dest="input", required=True, help='JSONL lines {"text": ..., "context": optional}')
    lab.add_argument("--out", required=True, help='JSONL output: each input line plus "category", "type" and "confidence"')
    lab.add_argument("--judge", default="embedded", help="'embedded' (MiniLM classifier, CPU) or a backend spec for the LLM classifier")
    lab.set_defaults(fn=_label)

    saf = sub.add_parser("safety", help="flag crises in patient text and check therapist replies")
    saf.add_argument("--in", dest="input", required=True, help='JSONL lines {"patient": ..., "therapist": optional}')
    saf.add_argument("--out", required=True, help='JSONL output: each input line plus "crisis", "crisis_type", "response_safe", ...')
    saf.add_argument("--judge", default="embedded", help="'embedded' (rules + MiniLM), 'rules', or a backend spec for the LLM checks")
    saf.set_defaults(fn=_safety)

    cal = sub.add_parser("calibrate", help="measure a judge's agreement with human labels (validate a judge before training on it)")
    cal.add_argument("--judge", required=True,
                     help="'embedded' ('rules' for crisis/reply_check) or a backend spec (hf:<dir>, vllm:<dir>, openai:<url>#<model>); "
                          "ctrs needs a backend spec ('embedded' = SmolLM2)")
    cal.add_argument("--data", required=True, help="labelled JSONL; formats in the README ('Validate your judge')")
    cal.add_argument("--kind", default=None,
                     help="acts, crisis, reply_check, distortions or ctrs (default: told from the first line's fields)")
    cal.add_argument("--limit", type=int, default=None, help="only N items, evenly spaced over the file")
    cal.add_argument("--out", default=None, help="also write the report as JSON to this file")
    cal.set_defaults(fn=_calibrate)

    val = sub.add_parser("validate-profiles", help="validate a profile file or directory")
    val.add_argument("source")
    val.set_defaults(fn=_validate_profiles)

    dash = sub.add_parser("dashboard", help="build the W&B workspace of the training scripts' keys (saved online, JSON offline)")
    dash.add_argument("--entity", required=True, help="W&B entity (user or team) of the project")
    dash.add_argument("--project", required=True, help="W&B project the scripts log to (WANDB_PROJECT, default cbtgym)")
    dash.add_argument("--name", default=None, help="workspace name (default: the name in the panels file)")
    dash.add_argument("--panels", default=None, help="panels YAML (default: cbtgym/training/dashboard.yaml)")
    dash.add_argument("--dry-run", action="store_true", help="build and print the definition, save nothing (no network)")
    dash.add_argument("--out", default=None, help="write the definition as JSON to this file")
    dash.set_defaults(fn=_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a config, backend or path error ends in one line on stderr and exit code 2."""
    from .backends.base import BackendError
    from .embeddings import EmbedderUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError, BackendError, EmbedderUnavailable) as e:
        # One line: the message already names the file, field or setting and the fix; a traceback
        # would bury it. Exceptions outside these (a bug) still show theirs.
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"cbtgym {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cbtgym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
