"""DeepSeek chat special tokens (the spellings DeepSeek V3/V4 tokenizers use) and mode prefixes."""

from __future__ import annotations

from typing import Final

BOS: Final = "<｜begin▁of▁sentence｜>"  # start of every prompt
EOS: Final = "<｜end▁of▁sentence｜>"  # end of an assistant turn; generation stops here
USER: Final = "<｜User｜>"  # opens a user turn
ASSISTANT: Final = "<｜Assistant｜>"  # opens an assistant turn
THINK_OPEN: Final = "<think>"  # a thinking prompt ends with this
THINK_CLOSE: Final = "</think>"  # a non-think prompt ends with this; splits reasoning from content
PAD: Final = "<｜▁pad▁｜>"  # padding

SPECIAL_TOKENS: Final = (BOS, EOS, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, PAD)

# Think Max is a fixed instruction prefix inside the prompt (see shared/FACTS.md).
THINK_MAX_PREFIX: Final = (
    "Reasoning effort: maximum. Think through the problem exhaustively, check each step, "
    "and consider alternatives before answering."
)
