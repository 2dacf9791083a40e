"""Precise prefix routing on `supernode up`: two tiny-v4 Flash groups (the built-in engine running a random
DeepSeek-V4 checkpoint on CPU, a small KV cache, KV events on by default) behind the real router, driven
through the official OpenAI and Anthropic SDKs.

- A follow-up turn lands on the group that holds its conversation's cache, though the router never saw
  the first turn (it went to the engine directly) — only the engine's KV events tell it.
- Once that group has evicted the prefix (other traffic filled its small cache), the next request with
  the prefix goes by load: to the idle group, not to the busy one whose cache is gone.
- Bad input is still a 4xx in each API's own error shape.

Its own stack (not the session one); needs the engine's `--num-kv-blocks` / `--max-num-seqs`, its
`/v1/kv_events`, the router's KV event feeds, `x-supernode-endpoint` and the router's
`supernode_router_prefix_index_*` gauges."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from builders import make_md
from upstack import UpLauncher, UpStack

from supernode.api import constants as C

MODEL = "deepseek-v4-flash"
NON_THINK = {"thinking": {"type": "disabled"}}
KV_BLOCKS, BLOCK = 48, 16  # a 768-token cache per group: a few prompts fill it
GROUPS = ("flash/0", "flash/1")
# One system prompt for two conversations: their first 256 bytes agree, so without the engines' KV
# events the router's tie-break would send both to the same group.
SYSTEM = "You are the night officer of a coastal lighthouse. Answer in one short sentence, plainly. " * 4


def spec() -> dict[str, Any]:
    return (make_md("flash").model(MODEL, source="builtin://tiny-v4").modes("non-think").replicas(2)
            .engine("builtin", maxConcurrency=2, args=["--num-kv-blocks", str(KV_BLOCKS), "--max-num-seqs", "2"])
            .dict())


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    with UpLauncher(tmp_path_factory.mktemp("precise"), UpStack).deployment(spec()).drain(1).run() as stack:
        yield stack


def synced(stack: UpStack, group: str) -> None:
    """Wait until the router's precise index holds as many blocks for `group` as its (idle) engine caches."""
    url = stack.group_urls()[group]
    stack.wait_for(f"the router to follow {group}'s KV events", lambda: stack.router_gauge(
        "supernode_router_prefix_index_blocks", endpoint=url) == len(stack.engine_cached_blocks(group)), 20)


def first_turn(stack: UpStack, group: str, messages: list[dict[str, str]]) -> str:
    """Turn 1 straight to one engine group (behind the router's back); the answer's text."""
    r = stack.engine_openai(group).chat.completions.create(model=MODEL, messages=messages,  # type: ignore[arg-type]
                                                           max_tokens=4, extra_body=NON_THINK)
    return r.choices[0].message.content or ""


def ask(stack: UpStack, messages: list[dict[str, str]]) -> tuple[str, int]:
    """One chat request through the router (OpenAI SDK): the group that served it, its cached tokens."""
    raw = stack.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=2, extra_body=NON_THINK)  # type: ignore[arg-type]
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return raw.headers[C.HEADER_ENDPOINT], int(usage.prompt_tokens_details.cached_tokens or 0)


class Busy:
    """A long streamed completion straight to one group, so the router sees it loaded; stopped on exit."""

    def __init__(self, stack: UpStack, group: str):
        self.stack, self.group, self.url = stack, group, stack.group_urls()[group]
        self.stop, self.started = threading.Event(), threading.Event()
        self.finished = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stream = self.stack.engine_openai(self.group).completions.create(
            model=MODEL, prompt=[5, 6, 7], max_tokens=KV_BLOCKS * BLOCK - 16, stream=True,
            extra_body={"ignore_eos": True})
        with stream:
            for chunk in stream:
                self.started.set()
                if self.stop.is_set():
                    return
                self.finished |= any(c.finish_reason for c in chunk.choices)

    def __enter__(self) -> Busy:
        self.thread.start()
        self.stack.wait_for(f"the router to see {self.group} loaded", lambda: self.started.is_set() and (
            self.stack.router_gauge("supernode_router_endpoint_load", endpoint=self.url) or 0) >= 1, 20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert not self.finished, "the busy request ended early: the routing decision is inconclusive"
        self.stop.set()
        self.thread.join(30)


def test_both_groups_are_indexed_precisely_and_a_follow_up_lands_where_its_cache_is(up: UpStack) -> None:
    for group in GROUPS:
        up.wait_for(f"{group} on the precise index", lambda g=group: up.router_gauge(  # type: ignore[misc]
            "supernode_router_prefix_index_mode", endpoint=up.group_urls()[g], mode="precise") == 1.0, 20)
    # Two conversations of one system prompt, turn 1 of each on a different group.
    lighthouse = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Is the lamp lit tonight?"}]
    harbour = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Which ships are in harbour?"}]
    a1 = first_turn(up, "flash/0", lighthouse)
    b1 = first_turn(up, "flash/1", harbour)
    for group in GROUPS:
        synced(up, group)

    # Follow-ups through the router land on the group holding each conversation; one of the two is
    # against the tie-break, so only the engines' KV events can put both right.
    endpoint, cached = ask(up, [*lighthouse, {"role": "assistant", "content": a1},
                                {"role": "user", "content": "And the fog horn?"}])
    assert (endpoint, cached >= 8 * BLOCK) == ("flash/0", True), (endpoint, cached)
    raw = up.anthropic().messages.with_raw_response.create(
        model=MODEL, max_tokens=2, system=SYSTEM, thinking={"type": "disabled"},
        messages=[{"role": "user", "content": harbour[1]["content"]}, {"role": "assistant", "content": b1 or "-"},
                  {"role": "user", "content": "And which are due at dawn?"}])
    assert raw.headers[C.HEADER_ENDPOINT] == "flash/1"
    assert (raw.parse().usage.cache_read_input_tokens or 0) >= 8 * BLOCK


def test_an_evicted_prefix_routes_by_load(up: UpStack) -> None:
    holder, other = "flash/0", "flash/1"
    before = up.engine_cached_blocks(holder)
    chat = [{"role": "system", "content": "Ship's log, second watch. " * 12},
            {"role": "user", "content": "Wind and sea state?"}]
    answer = first_turn(up, holder, chat)
    follow_up = [*chat, {"role": "assistant", "content": answer}, {"role": "user", "content": "Any lights seen?"}]
    prefix = up.engine_cached_blocks(holder) - before
    assert len(prefix) >= 8, prefix
    synced(up, holder)

    with Busy(up, holder):  # the holder is busier, but holds the prefix: the prefix wins
        assert ask(up, follow_up)[0] == holder

    # Other traffic (short token-id prompts) fills the cache until the conversation's blocks start to
    # go. They go all at once: without the snapshot at their end nothing can resume from them, so the
    # engine drops (and announces) them together instead of leaving the router counting them.
    filler = up.engine_openai(holder)
    for i in range(2 * KV_BLOCKS):
        if prefix - up.engine_cached_blocks(holder):
            break
        filler.completions.create(model=MODEL, prompt=[10 + (i * 61 + j) % 400 for j in range(4 * BLOCK)],
                                  max_tokens=1)
    assert not prefix & up.engine_cached_blocks(holder), "the conversation was evicted only in part"
    synced(up, holder)

    with Busy(up, holder):  # now nobody holds it: the idle group takes it, with nothing cached
        assert ask(up, follow_up) == (other, 0)


def test_bad_input_is_a_4xx_in_each_apis_shape(up: UpStack) -> None:
    with pytest.raises(openai.BadRequestError) as oa:
        up.openai().chat.completions.create(model=MODEL, messages=[], max_tokens=2)
    assert oa.value.status_code == 400
    body = oa.value.body
    assert isinstance(body, dict) and body.get("message") and body.get("type"), body  # {"error": {...}}, unwrapped

    too_long = "lighthouse " * (KV_BLOCKS * BLOCK)  # more tokens than the groups' context (their KV cache)
    with pytest.raises(openai.BadRequestError) as long_:
        up.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": too_long}],
                                            max_tokens=2, extra_body=NON_THINK)
    assert long_.value.code == "context_length_exceeded", long_.value.body

    with pytest.raises(anthropic.BadRequestError) as an:
        up.anthropic().messages.create(model=MODEL, max_tokens=2, messages=[])
    assert an.value.status_code == 400
    assert isinstance(an.value.body, dict) and an.value.body.get("type") == "error", an.value.body
    assert an.value.body["error"]["type"] == "invalid_request_error"
