"""Every client a Spark owner runs, through the real stack (the gateway in this process, the
supervisor, emulated engines as real units on the sandboxed systemd): the openai SDK's
Responses API and the anthropic SDK's Messages API, streaming and not, with tools."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from sparkctl.core.states import ModelState
from tests.integration.gateway_env import Env, env

__all__ = ["env"]  # the fixture, used by name

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _anthropic(env: Env, *, bearer: bool = False) -> anthropic.AsyncAnthropic:
    """As the Anthropic SDK is configured for sparkctl: the gateway's root URL (the SDK adds
    /v1/messages), the key as `x-api-key` (or, as Claude Code's ANTHROPIC_AUTH_TOKEN sends it,
    as a bearer token)."""
    base = env.url
    if bearer:
        return anthropic.AsyncAnthropic(base_url=base, auth_token=env.user, api_key=None, max_retries=0)
    return anthropic.AsyncAnthropic(base_url=base, api_key=env.user, max_retries=0)


async def test_the_responses_api_with_the_openai_sdk(env: Env) -> None:
    client = env.client()
    assert env.sup.view("chat").state is ModelState.STOPPED
    reply = await client.responses.create(model="chat", input="Say hello", max_output_tokens=40)
    assert reply.status in ("completed", "incomplete") and reply.output_text
    assert reply.usage is not None and 0 < reply.usage.output_tokens <= 40
    assert env.sup.view("chat").state is ModelState.READY  # started for it (a cold start)

    events = [
        e.type
        async for e in await client.responses.create(model="chat-alias", input="Say hello", stream=True)
    ]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert "response.output_text.delta" in events

    # a tool named in the request is called; its result goes back as an input item
    called = await client.responses.create(
        model="chat",
        input="What is the weather in Oslo? use get_weather",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    calls = [item for item in called.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    follow = await client.responses.create(
        model="chat",
        input=[
            {"role": "user", "content": "What is the weather in Oslo? use get_weather"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert follow.output_text  # prose after a tool result


async def test_the_messages_api_with_the_anthropic_sdk(env: Env) -> None:
    client = _anthropic(env)
    message = await client.messages.create(
        model="chat", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content and message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0

    async with client.messages.stream(
        model="chat", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text

    # tool use, round trip
    tools: list[anthropic.types.ToolParam] = [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    ask = {"role": "user", "content": "What is the weather in Oslo? use get_weather"}
    used = await client.messages.create(model="chat", max_tokens=128, tools=tools, messages=[ask])  # type: ignore[list-item]
    assert used.stop_reason == "tool_use"
    tool_use = next(block for block in used.content if block.type == "tool_use")
    assert tool_use.name == "get_weather" and "city" in tool_use.input
    answered = await client.messages.create(
        model="chat",
        max_tokens=128,
        tools=tools,
        messages=[
            ask,  # type: ignore[list-item]
            {"role": "assistant", "content": used.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
            },
        ],
    )
    assert answered.stop_reason != "tool_use" and answered.content[0].type == "text"


async def test_anthropic_clients_get_the_gateways_auth_and_errors(env: Env) -> None:
    # Claude Code's ANTHROPIC_AUTH_TOKEN: the key as a bearer token
    reply = await _anthropic(env, bearer=True).messages.create(
        model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content
    wrong = anthropic.AsyncAnthropic(base_url=env.url, api_key="sk-spark-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.create(model="chat", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.NotFoundError) as missing:
        await _anthropic(env).messages.create(
            model="chta", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert "Did you mean 'chat'" in str(missing.value)


async def test_a_route_the_model_cannot_serve_touches_no_unit(env: Env) -> None:
    """Embeddings on a chat-only model, while another model runs: refused before scheduling,
    and systemd's view is the same before and after."""
    client = env.client()
    await client.chat.completions.create(
        model="ex-a", messages=[{"role": "user", "content": "a"}], max_tokens=2
    )
    before = await env.unit_states()
    assert before["sparkctl-ex-a.service"] == "active"
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model="ex-b", input="x")
    assert refused.value.code == "route_not_supported" and "embeddings" in refused.value.message
    assert await env.unit_states() == before
