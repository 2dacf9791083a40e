"""Anthropic tool_use end to end: Anthropic SDK → router (Messages ↔ chat translation) → the built-in
engine's HTTP app and loop, with a scripted fake model that calls a tool in DeepSeek's format."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import anthropic
import openai

from supernode.api import chattokens as T
from supernode.engine.chat import ReasoningBudgets
from supernode.engine.llm_engine import EngineOptions, LLMEngine
from supernode.engine.metrics import EngineMetrics
from supernode.engine.server.app import ServerState, build_app
from supernode.engine.tokenizer import Tokenizer

sys.path.insert(0, str(Path(__file__).parents[1] / "router"))

from router_stack import MODEL, Stack, ep

TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def test_anthropic_tool_use_through_router_and_builtin_engine(
    tmp_path: Path, server_thread: Any, tokenizer: Tokenizer, scripted: Any
) -> None:
    text = f'Checking.{T.TOOL_CALLS_BEGIN}{T.TOOL_CALL_BEGIN}get_weather{T.TOOL_SEP}{{"city": "Paris"}}'
    runner = scripted([*tokenizer.encode(f"{text}{T.TOOL_CALL_END}{T.TOOL_CALLS_END}"), tokenizer.eos_id])
    engine = LLMEngine(runner, tokenizer, EngineOptions(MODEL, 4096, max_num_seqs=8), EngineMetrics(MODEL))
    state = ServerState(MODEL, engine.metrics, budgets=ReasoningBudgets(64, 64))
    state.engine = engine
    stack = Stack(tmp_path)
    engine.start()
    try:
        with server_thread(build_app(state)) as served:
            try:
                stack.write_endpoints([ep(served.url)])
                url = await stack.router()
                client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
                question: Any = [{"role": "user", "content": "weather in Paris?"}]
                common: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 200, "tools": [TOOL]}
                msg = await client.messages.create(messages=question, thinking={"type": "disabled"}, **common)
                assert [b.type for b in msg.content] == ["text", "tool_use"] and msg.stop_reason == "tool_use"
                use: Any = msg.content[1]
                assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id

                async with client.messages.stream(messages=question, thinking={"type": "disabled"}, **common) as stream:
                    final = await stream.get_final_message()
                assert [b.type for b in final.content] == ["text", "tool_use"] and final.stop_reason == "tool_use"
                streamed: Any = final.content[1]
                assert streamed.name == "get_weather" and streamed.input == {"city": "Paris"}

                # the tool_result goes back; the engine's prompt carries the call and its output
                follow: Any = [
                    *question,
                    {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
                ]
                again = await client.messages.create(messages=follow, thinking={"type": "disabled"}, **common)
                assert again.stop_reason in ("tool_use", "end_turn", "max_tokens")
                seen = runner.rows[-1][0]
                assert tokenizer.token_id(T.TOOL_OUTPUT_BEGIN) in seen and "sunny" in tokenizer.decode(seen)
                assert tokenizer.token_id(T.TOOL_SEP) in seen

                # the OpenAI face of the router passes tool calls and logprobs through unchanged
                oa = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
                tools: Any = [{"type": "function",
                               "function": {"name": TOOL["name"], "parameters": TOOL["input_schema"]}}]
                resp = await oa.chat.completions.create(
                    model=MODEL, messages=question, tools=tools, logprobs=True, top_logprobs=2, temperature=0,
                    extra_body={"thinking": {"type": "disabled"}},
                )  # fmt: skip
                assert [c.index for c in resp.choices] == [0]  # n not sent: one choice
                for c in resp.choices:
                    call: Any = (c.message.tool_calls or [None])[0]
                    assert c.finish_reason == "tool_calls" and call.function.name == "get_weather"
                    assert c.logprobs and c.logprobs.content
                    assert all(len(e.top_logprobs) == 2 for e in c.logprobs.content)
            finally:  # the router first: its KV event stream would hold the engine's server open
                await stack.close()
    finally:
        await asyncio.to_thread(engine.stop)
