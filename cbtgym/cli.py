"""The ``cbtgym`` command line: simulate sessions, label acts, check safety, validate profiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _simulate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backends.factory import make_backend
    from .jsonl import JsonlWriter, done_keys
    from .rollout import EpisodeSpec, run_episodes
    from .therapists import PromptTherapist

    specs = [EpisodeSpec(seed=args.seed + i, attitude=args.attitude) for i in range(args.episodes)]
    out = Path(args.out)
    finished = done_keys(out, "key")
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

    # label_file takes the --judge value itself and builds the classifier only after the
    # whole input has been validated, so a bad line fails before a model loads.
    n = label_file(args.input, args.out, args.judge)
    print(f"labelled {n} utterances with judge {args.judge!r} -> {args.out}", file=sys.stderr)
    return 0


def _safety(args: argparse.Namespace) -> int:
    from rewards.factory import make_judge
    from rewards.safety import read_safety_items, safety_file

    read_safety_items(args.input)  # validate every line before a judge (possibly a model) is built
    detector = make_judge("crisis", args.judge)
    checker = make_judge("reply_check", args.judge, detector=detector)
    counts = safety_file(args.input, args.out, detector, checker)
    print(
        f"{counts['lines']} lines: {counts['crisis']} crisis, {counts['replies']} replies checked, "
        f"{counts['unsafe']} unsafe, {counts['unknown']} unknown -> {args.out}",
        file=sys.stderr,
    )
    return 0


def _validate_profiles(args: argparse.Namespace) -> int:
    from .profiles import load_profiles

    profiles = load_profiles(args.source)
    print(f"{len(profiles)} valid profiles in {args.source}")
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
    sim.add_argument("--out", required=True, help="JSONL output; re-running skips episodes already there")
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

    val = sub.add_parser("validate-profiles", help="validate a profile file or directory")
    val.add_argument("source")
    val.set_defaults(fn=_validate_profiles)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"cbtgym {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
