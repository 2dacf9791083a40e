"""Request-size rules shared by the router and the engine (pure).

- ``resolve_max_tokens``: the one rule for a request's completion-token limit. The router resolves it
  once, reserves that many tokens at admission, and sends the engine exactly that value as
  ``max_tokens`` (``max_completion_tokens`` removed), so the engine cannot generate more than was
  reserved.
- ``MAX_CHOICES``: the most choices (``n``) one request may ask for. The engine runs each choice as its
  own sequence; the router reserves ``n`` times ``max_tokens`` of completion for the request.
- ``prompt_byte_bound``: how many bytes of prompt text can possibly fit a context window. A tokenizer
  turns at most ``max_bytes_per_token`` bytes into one token, so text of more bytes than
  ``context_tokens * max_bytes_per_token`` needs more tokens than the context holds: such a prompt is
  refused without tokenizing it.
"""

from __future__ import annotations

# Longest token of a byte-level BPE vocabulary, in bytes, with a margin. DeepSeek's vocabulary has runs
# of whitespace/punctuation tokens of a few dozen bytes; configurable where a tokenizer differs.
DEFAULT_MAX_BYTES_PER_TOKEN = 64

MAX_CHOICES = 16  # n per request: the engine's limit, enforced by the router too


class MaxTokensError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def resolve_max_tokens(max_tokens: int | None, max_completion_tokens: int | None, *, default: int | None,
                       limit: int) -> int | None:
    """``max_completion_tokens`` and ``max_tokens`` mean the same thing (the newer and the older name):
    either may be sent, both only when equal; none → ``default``. The result is in [1, ``limit``]
    (None only when nothing was sent and ``default`` is None)."""
    if max_tokens is not None and max_completion_tokens is not None and max_tokens != max_completion_tokens:
        raise MaxTokensError(
            f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion_tokens}) disagree; "
            "send one of them", "max_completion_tokens")
    value = max_completion_tokens if max_completion_tokens is not None else max_tokens
    param = "max_completion_tokens" if max_completion_tokens is not None else "max_tokens"
    if value is None:
        return None if default is None else max(1, min(default, limit))
    if value < 1:
        raise MaxTokensError(f"{param} must be at least 1, got {value}", param)
    if value > limit:
        raise MaxTokensError(f"{param} must be at most {limit}, got {value}", param)
    return value


def prompt_byte_bound(context_tokens: int, max_bytes_per_token: int = DEFAULT_MAX_BYTES_PER_TOKEN) -> int:
    """Prompt text longer than this many UTF-8 bytes cannot fit ``context_tokens``."""
    return max(1, context_tokens) * max(1, max_bytes_per_token)
