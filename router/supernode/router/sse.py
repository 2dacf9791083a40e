"""Server-sent events: splitting an upstream byte stream into whole events (pure)."""

from __future__ import annotations

from typing import Any


class SseSplitter:
    """Feed raw chunks, get back the complete events (without their blank-line terminator)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        if b"\n\n" not in self._buffer:
            return []
        *events, self._buffer = self._buffer.split(b"\n\n")
        return [e for e in events if e]


def data_of(event: bytes) -> str | None:
    """The `data:` payload of one event (first data line), or None for comments / other fields."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip().decode(errors="replace")
    return None


def has_token(choice: Any) -> bool:
    """Whether an OpenAI stream choice carries generated text (content, reasoning or completion text)."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta") or {}
    return bool(choice.get("text") or delta.get("content") or delta.get("reasoning_content"))


def tokens_in(choice: Any) -> int:
    """Generated tokens one stream choice carries: its log-probability entries when it has them (one per
    token, however many tokens the text holds), else 1 for a choice with text (one decoding step)."""
    if not isinstance(choice, dict):
        return 0
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        entries = logprobs.get("content") if "content" in logprobs else logprobs.get("tokens")
        if isinstance(entries, list) and entries:
            return len(entries)
    return int(has_token(choice))


def reply_text(obj: Any) -> str:
    """The text of the first choice of an OpenAI chat answer or stream event (``message`` or ``delta`` content)."""
    for choice in obj.get("choices") or [] if isinstance(obj, dict) else []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            content = (choice.get("message") or choice.get("delta") or {}).get("content")
            return content if isinstance(content, str) else ""
    return ""
