from .prompt_therapist import PROMPTS_DIR, PromptTherapist, therapist_prompt

__all__ = ["PROMPTS_DIR", "PromptTherapist", "therapist_prompt"]
