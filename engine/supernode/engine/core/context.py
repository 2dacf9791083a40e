"""The context-length rule, in one place: a prompt fits when at least one token can follow it."""

from __future__ import annotations


class ContextLengthExceeded(ValueError):
    """A prompt leaves no room for a generated token within the context limit."""

    def __init__(self, num_prompt_tokens: int, max_model_len: int) -> None:
        super().__init__(f"prompt has {num_prompt_tokens} tokens; this model's context is {max_model_len}")
        self.num_prompt_tokens, self.max_model_len = num_prompt_tokens, max_model_len


def check_prompt_fits(num_prompt_tokens: int, max_model_len: int) -> None:
    """Raise ContextLengthExceeded unless ``num_prompt_tokens + 1 <= max_model_len``."""
    if num_prompt_tokens + 1 > max_model_len:
        raise ContextLengthExceeded(num_prompt_tokens, max_model_len)


def room_after(num_prompt_tokens: int, max_model_len: int) -> int:
    """Tokens that may be generated after a prompt that fits."""
    return max_model_len - num_prompt_tokens
