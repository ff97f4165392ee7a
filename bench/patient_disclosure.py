"""Does the LLM patient voice its automatic thought once the therapist's questions reach it?

    python bench/patient_disclosure.py                      # embedded SmolLM2 patient, all held-out profiles
    python bench/patient_disclosure.py --note my_note.txt   # try another note template ({facts} is filled)
    python bench/patient_disclosure.py --patient-backend vllm:embedded --limit 6

A scripted therapist asks about thoughts from the first round, so every session reaches the thought
layer (the thought enters the patient's chat as a note); what varies is whether the patient model then
says it. Prints, over held-out profiles x active/passive x seeds: sessions reached, sessions whose thought
came out (MiniLM disclosure threshold, as the benchmark's "AT recovered"), and the mean best similarity.
This bounds what any therapist can score on "AT recovered" with this patient model; the benchmark's
"AT reached" is the therapist's part alone.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


ACTIONS = [
    "That sounds really hard. What do you think about it?",
    "That sounds really hard. What went through your mind when it happened?",
    "What do you think about that?",
    "That sounds really hard. What do you think about that?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient-backend", default="embedded", help="backend spec of the patient model")
    parser.add_argument("--profiles", default="bank:test")
    parser.add_argument("--limit", type=int, default=0, help="first N profiles only (0: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--note", help="a note template file to try instead of prompts/llm_patient_note.txt")
    parser.add_argument("--show", type=int, default=2, help="print the patient turns of this many sessions")
    args = parser.parse_args()

    from cbtgym.backends import Sampling, make_backend
    from cbtgym.envs import CBTSessionVectorEnv
    from cbtgym.patients import LLMPatient
    from cbtgym.training.evaluation import eval_specs
    from rewards.at_recovery import EmbeddingATJudge

    patient = LLMPatient(make_backend(args.patient_backend),
                         Sampling(max_new_tokens=32, temperature=0.7, top_p=1.0, seed=0), rate_satisfaction=False,
                         note_template=Path(args.note).read_text() if args.note else None)
    specs = eval_specs(args.profiles, "both", args.seeds, args.limit)
    venv = CBTSessionVectorEnv(len(specs), profiles=args.profiles, patient=patient, reward_fn="placeholder",
                               max_rounds=len(ACTIONS))
    venv.reset(seed=[s.seed for s in specs], options={"per_env": [s.options() for s in specs]})
    for action in ACTIONS:
        venv.step([action] * len(specs))
    transcripts = [e.transcript for e in venv.envs]
    scores = EmbeddingATJudge().score(transcripts, [e.profile for e in venv.envs])
    reached = [any(t.meta.get("disclosed") == "thought" for t in tr.patient_turns) for tr in transcripts]
    said = [bool(s.scores["disclosed"]) for s in scores]
    print(f"{len(specs)} sessions ({args.patient_backend} patient): thought layer reached in {sum(reached)}, "
          f"thought voiced in {sum(said)} ({100 * sum(said) / len(said):.0f}%), "
          f"mean AT similarity {statistics.mean(s.scores['similarity'] for s in scores):.3f}")
    for tr, env in list(zip(transcripts, venv.envs))[:args.show]:
        print(f"\n{env.profile.id} ({env.profile.attitude}); ground truth: {env.profile.automatic_thoughts[0]}")
        for t in tr.patient_turns:
            print(f"  [{t.meta.get('disclosed') or '-'}] {t.text}")


if __name__ == "__main__":
    main()
