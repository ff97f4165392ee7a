"""Which therapist moves open which patient layer; does the LLM patient voice its thought once reached?

    python bench/patient_disclosure.py --patient rule       # the move table: move kind x layer reached (CPU, seconds)
    python bench/patient_disclosure.py                      # embedded SmolLM2 patient, all held-out profiles
    python bench/patient_disclosure.py --note my_note.txt   # try another note template ({facts} is filled)
    python bench/patient_disclosure.py --patient-backend vllm:embedded --limit 6

A scripted therapist asks about thoughts from the first round, so every session reaches the thought
layer (the thought enters the patient's chat as a note); what varies is whether the patient model then
says it. Prints, over held-out profiles x active/passive x seeds: sessions reached, sessions whose thought
came out (MiniLM disclosure threshold, as the benchmark's "AT recovered"), and the mean best similarity.
This bounds what any therapist can score on "AT recovered" with this patient model; the benchmark's
"AT reached" is the therapist's part alone.

``--patient rule`` plays each kind of move below (written for this bench, worded unlike the examples of
``cbtgym/patients/moves.yaml``) as the first question of a session of every profile, active and passive
alike after one validating turn, and prints which layer the rule patient opened: paraphrased good
questions should open their layer, stuffed keywords and advice dressed as a question nothing.
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


#: Kinds of therapist move, each worded several ways (none of them an example of moves.yaml).
MOVE_KINDS = {
    "paraphrased emotions q": ["What has your mood been like around all this?", "How are you feeling in yourself about it?",
                               "When it comes back to you, what feelings show up?"],
    "paraphrased events q": ["What's been going on for you lately?", "Could you describe what happened that day?",
                             "Take me back to when it happened, what was going on?"],
    "paraphrased thought q": ["What was running through your head as it happened?", "Right then, what were you telling yourself?",
                              "What was the first thing that crossed your mind?", "How did you read the situation in that moment?"],
    "keyword list": ["thoughts feelings core belief automatic thought", "automatic thought, core belief, cognitive distortion",
                     "feelings thoughts beliefs mind"],
    "keywords + question mark": ["Thoughts, feelings, core belief, automatic thought?",
                                 "What went through your mind, thoughts feelings core belief automatic thought?",
                                 "Automatic thoughts? Core beliefs? Feelings?"],
    "advice as a question": ["Have you tried just thinking positive about it?", "Why not tell yourself it doesn't matter?",
                             "Couldn't you simply stop worrying about it?"],
    "self-focused small talk": ["I'm glad to have you. I'm glad to have you as a patient.",
                                "I always enjoy meeting new people, it's the best part of my job."],
    "off-topic question": ["What do you think about the football this weekend?", "Where are you going on holiday this year?"],
}
WARM_UP = "That sounds really hard, thank you for telling me."


def move_table(profiles: str, limit: int) -> None:
    """Print move kind x layer reached for the rule patient (first question of a session, after a warm-up)."""
    import time

    from cbtgym.envs.cbt_session import OPENING
    from cbtgym.patients import LAYERS, RulePatient
    from cbtgym.profiles import load_profiles
    from cbtgym.transcript import Transcript

    profs = load_profiles(profiles)[: limit or None]
    patient = RulePatient()
    patient.reader.read([WARM_UP])  # loads MiniLM and fits the act classifier, outside the timing
    rows, t0, calls = {}, time.time(), 0
    for kind, lines in MOVE_KINDS.items():
        sessions = [(p, line) for p in profs for line in lines]
        states = [patient.new_state(p) for p, _ in sessions]
        ts = [Transcript(p.id, p.attitude) for p, _ in sessions]
        for therapist in (OPENING, WARM_UP):
            for t in ts:
                t.add("therapist", therapist)
            for t, r in zip(ts, patient.respond(states, ts)):
                t.add("patient", r.text)
        for t, (_, line) in zip(ts, sessions):
            t.add("therapist", line)
        replies = patient.respond(states, ts)
        calls += 3 * len(sessions)
        counts = {layer: 0 for layer in (*LAYERS, "none")}
        for r in replies:
            counts[r.meta.get("disclosed") or "none"] += 1
        rows[kind] = (len(replies), counts)
    elapsed = time.time() - t0
    header = f"{'move kind':26} {'n':>4} " + " ".join(f"{c:>10}" for c in (*LAYERS, "none"))
    print(header)
    for kind, (n, counts) in rows.items():
        print(f"{kind:26} {n:>4} " + " ".join(f"{100 * counts[c] / n:>9.0f}%" for c in (*LAYERS, "none")))
    print(f"\n{len(profs)} profiles ({profiles}); {calls} patient replies in {elapsed:.1f}s "
          f"({1000 * elapsed / calls:.1f} ms a reply, models loaded before)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", choices=("llm", "rule"), default="llm",
                        help="'rule': the move table of the rule patient; 'llm': the thought-voicing check")
    parser.add_argument("--patient-backend", default="embedded", help="backend spec of the patient model")
    parser.add_argument("--profiles", default="bank:test")
    parser.add_argument("--limit", type=int, default=0, help="first N profiles only (0: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--note", help="a note template file to try instead of prompts/llm_patient_note.txt")
    parser.add_argument("--show", type=int, default=2, help="print the patient turns of this many sessions")
    args = parser.parse_args()
    if args.patient == "rule":
        move_table(args.profiles, args.limit)
        return

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
