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

# Tool use (DeepSeek V3.1+ format). A call: CALL_BEGIN name SEP arguments-json CALL_END, several
# calls wrapped in CALLS_BEGIN .. CALLS_END; tool results: OUTPUT_BEGIN text OUTPUT_END, wrapped in
# OUTPUTS_BEGIN .. OUTPUTS_END.
TOOL_CALLS_BEGIN: Final = "<｜tool▁calls▁begin｜>"
TOOL_CALLS_END: Final = "<｜tool▁calls▁end｜>"
TOOL_CALL_BEGIN: Final = "<｜tool▁call▁begin｜>"
TOOL_CALL_END: Final = "<｜tool▁call▁end｜>"
TOOL_SEP: Final = "<｜tool▁sep｜>"
TOOL_OUTPUTS_BEGIN: Final = "<｜tool▁outputs▁begin｜>"
TOOL_OUTPUTS_END: Final = "<｜tool▁outputs▁end｜>"
TOOL_OUTPUT_BEGIN: Final = "<｜tool▁output▁begin｜>"
TOOL_OUTPUT_END: Final = "<｜tool▁output▁end｜>"
TOOL_TOKENS: Final = (
    TOOL_CALLS_BEGIN, TOOL_CALLS_END, TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_SEP,
    TOOL_OUTPUTS_BEGIN, TOOL_OUTPUTS_END, TOOL_OUTPUT_BEGIN, TOOL_OUTPUT_END,
)  # fmt: skip

# Appended in this order, so the ids of the earlier tokens stay what older checkpoints have.
SPECIAL_TOKENS: Final = (BOS, EOS, USER, ASSISTANT, THINK_OPEN, THINK_CLOSE, PAD, *TOOL_TOKENS)

# Think Max is a fixed instruction prefix inside the prompt (see shared/FACTS.md).
THINK_MAX_PREFIX: Final = (
    "Reasoning effort: maximum. Think through the problem exhaustively, check each step, "
    "and consider alternatives before answering."
)
