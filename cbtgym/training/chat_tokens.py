"""The tokens of a multi-turn chat as one prompt and one growing completion, cut from the tokenizer's template.

A session trained with GRPO is one sequence: the prompt (system prompt, the opening, the first patient
reply, up to the assistant generation header), then every therapist turn as the policy generated it and,
between two turns, the template's tokens that close the turn, hold the patient's reply and open the next
assistant turn. Those in-between tokens are found by rendering the conversation with and without the
reply and taking the difference, so any chat template that appends turns (ChatML for SmolLM2, Llama 3's
headers) gives them without a model-specific rule.
"""

from __future__ import annotations

from typing import Any, Sequence


class ChatLayout:
    """Token ids of a chat's prompt and of the template text between two assistant turns.

    Args:
        tokenizer: A tokenizer with a chat template.
        eos_ids: The ids that end an assistant turn when the model generates them (TRL's ``trainer.eos_token_ids``).
    """

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        # The texts the template may close an assistant turn with (ChatML's <|im_end|>, Llama's <|eot_id|>).
        self._ends = [tokenizer.decode([i]) for i in eos_ids]

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat up to and including the header of the next assistant turn."""
        return list(self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                       return_dict=False))

    def closes_turn(self, ids: Sequence[int]) -> bool:
        """Whether a generated turn ended itself (its last token is an end-of-turn id) rather than being cut."""
        return bool(ids) and ids[-1] in self.eos_ids

    def between_turns(self, messages: Sequence[dict[str, str]], closed: bool) -> list[int]:
        """The template tokens after an assistant turn up to the header of the next one.

        Args:
            messages: The chat whose last two messages are the assistant turn and the reply to it (a user message).
            closed: Whether the generated turn ended with its end-of-turn token; a turn cut at the token
                budget gets the template's end-of-turn token here, so the next turn reads a well-formed chat.

        Raises:
            ValueError: The template renders earlier messages differently once a reply follows, or closes an
                assistant turn with no end-of-turn token of ``eos_ids``: the turns cannot be joined by difference.
        """
        messages = list(messages)
        if len(messages) < 2 or messages[-1]["role"] != "user" or messages[-2]["role"] != "assistant":
            raise ValueError("between_turns() needs a chat ending with an assistant turn and a user reply to it")
        before = self._render(messages[:-1], add_generation_prompt=False)
        after = self._render(messages, add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError("the chat template renders the earlier turns differently once a reply follows; "
                             "multi-turn GRPO needs a template that only appends")
        cut, end = max((before.rfind(e), e) for e in self._ends)
        if cut < 0:
            raise ValueError(f"the chat template closes an assistant turn with none of the end-of-turn tokens "
                             f"{self._ends}; set the model's generation_config.eos_token_id to its end-of-turn token")
        glue = after[cut + len(end):] if closed else after[cut:]
        return list(self.tokenizer(glue, add_special_tokens=False)["input_ids"])

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
