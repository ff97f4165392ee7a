"""The feedback conditions of the refinement protocol (kept import-free: the config validates against them)."""

#: ``expert``: the expert LLM's feedback on the dialogue so far; ``generic``: the same fixed sentence every time
#: (``prompts/refinement_generic_feedback.txt``); ``none``: no feedback slot in the therapist's prompt.
CONDITIONS = ("expert", "generic", "none")
