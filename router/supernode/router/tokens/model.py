"""One model's prompt encoder (pure): the engine's tokenizer, chat template, block size and hash seed.

A request is first *rendered* (cheap: the shared chat template, ``supernode.api.chattemplate``) and then
*encoded* (the costly part, cached per text piece), exactly the steps the engine's routes take; the
token ids are hashed into blocks with ``supernode.api.hashing``, as the engine's block manager does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from supernode.api import chattokens as T
from supernode.api.chattemplate import TEMPLATE_ID, ChatError, chat_prompt
from supernode.api.hashing import block_hashes
from supernode.api.models import Mode
from supernode.api.prompttokens import Piece, PieceCache, PromptTokenizer, tokenizer_digest
from supernode.api.tooltemplate import ToolSpecError
from supernode.router.apis.common import ParsedRequest
from supernode.router.config import LocalTokenizer

Source = Literal["engine", "file"]
_TOOL_TOKENS = (T.TOOL_CALLS_BEGIN, T.TOOL_CALLS_END, T.TOOL_CALL_BEGIN, T.TOOL_CALL_END, T.TOOL_SEP)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A request's prompt before encoding: template pieces (chat), raw text (completions) or given ids."""

    pieces: tuple[Piece, ...] = ()
    text: str | None = None
    ids: tuple[int, ...] | None = None


@dataclass(slots=True)
class ModelTokenizer:
    tokenizer: PromptTokenizer
    hash_seed: str
    block_size: int
    template: str
    digest: str
    source: Source
    etag: str = ""
    cache: PieceCache = field(default_factory=PieceCache)
    tool_tokens: bool = field(init=False)

    def __post_init__(self) -> None:
        self.tool_tokens = all(self.tokenizer.token_id(t) is not None for t in _TOOL_TOKENS)

    def render(self, parsed: ParsedRequest, mode: Mode) -> Rendered | None:
        """The prompt as the engine renders it for ``mode``; None when the engine would refuse the request
        (it answers the 400 then; the router routes it approximately)."""
        body = parsed.body
        if parsed.upstream_path == "/v1/chat/completions":
            try:
                prompt = chat_prompt(body.get("messages"), body.get("tools"), body.get("tool_choice"), mode,
                                     tool_tokens=self.tool_tokens)
            except (ChatError, ToolSpecError):
                return None
            return Rendered(pieces=tuple(prompt.pieces))
        prompt_field = _single_prompt(body.get("prompt"))
        if isinstance(prompt_field, str):
            return Rendered(text=prompt_field)
        return None if prompt_field is None else Rendered(ids=tuple(prompt_field))

    def cost_chars(self, rendered: Rendered) -> int:
        """Characters of work: uncached text to encode, plus cached text at 1/16 (its ids are still copied
        and hashed), so a huge fully cached prompt also leaves the event loop."""
        if rendered.text is not None:
            return len(rendered.text)
        if rendered.ids is not None:
            return len(rendered.ids) // 4
        total = sum(len(p.text) for p in rendered.pieces)
        uncached = self.cache.uncached_chars(rendered.pieces)
        return uncached + (total - uncached) // 16

    def encode(self, rendered: Rendered) -> tuple[int, ...]:
        """The prompt's token ids (CPU-bound for long uncached text: run it off the event loop)."""
        if rendered.ids is not None:
            return rendered.ids  # a token-id prompt is taken as given, as the engine does
        if rendered.text is not None:  # /v1/completions: the tokenizer's own post-processing (BOS) applies
            return tuple(self.tokenizer.encode_text(rendered.text, add_special_tokens=True))
        return tuple(self.tokenizer.encode_pieces(rendered.pieces, self.cache))

    def hashes(self, ids: Sequence[int], max_blocks: int) -> tuple[int, ...]:
        """Chained block hashes of the leading blocks an engine can reuse for this prompt, as its block manager
        has them (at most ``max_blocks``). Engines compute at least the prompt's last token, so a prompt of
        exactly k blocks reuses k - 1 of them: counting the last would predict a hit no engine gives."""
        usable = min(max_blocks, max(0, len(ids) - 1) // self.block_size)
        return tuple(block_hashes(ids[: usable * self.block_size], self.hash_seed, self.block_size))


def file_tokenizer(model: str, local: LocalTokenizer) -> ModelTokenizer:
    """A tokenizer named in the router's config (engines that serve none); a bad file fails startup."""
    text = Path(local.file).read_text()
    try:
        tok = PromptTokenizer.from_str(text)
    except Exception as e:  # tokenizers raises its own exception type for bad JSON
        raise ValueError(f"tokenizers.models.{model}.file: {local.file} does not load: {e}") from None
    return ModelTokenizer(tok, local.hash_seed or model, local.block_size, TEMPLATE_ID, tokenizer_digest(text), "file")


def given_ids(parsed: ParsedRequest) -> tuple[int, ...] | None:
    """A /v1/completions prompt of token ids: its ids are known without any tokenizer."""
    prompt = _single_prompt(parsed.body.get("prompt"))
    return tuple(prompt) if isinstance(prompt, list) else None


def _single_prompt(prompt: Any) -> str | list[int] | None:
    """The one prompt of a /v1/completions body (the router's parser allows one), or None if unusable."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return prompt
    return None
