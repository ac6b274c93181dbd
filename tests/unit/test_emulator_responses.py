"""sparkctl.emulator's /v1/responses, driven by the official openai SDK as vLLM's clients drive it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.unit.test_emulator import Emu, expected_text, start

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
CLOCK: Any = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emu]:
    shared = start("--served-model-name", "m", "--max-model-len", "64")
    try:
        yield shared
    finally:
        shared.stop()


def test_text_reply(emu: Emu) -> None:
    reply = emu.client().responses.create(model="m", input="hello there", max_output_tokens=5)
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.model == "m"
    assert reply.output_text == expected_text(5)
    [message] = reply.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and [c.type for c in message.content] == ["output_text"]
    # The cap cut it: vLLM reports that as incomplete, for want of output tokens
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (2, 5, 7)
    assert reply.usage.output_tokens_details.reasoning_tokens == 0
    assert (reply.max_output_tokens, reply.tool_choice, reply.tools, reply.parallel_tool_calls) == (
        5,
        "auto",
        [],
        True,
    )


def test_a_reply_ends_by_itself_and_instructions_and_items_count(emu: Emu) -> None:
    items: Any = [
        {"role": "user", "content": "one two"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "three"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "four five six"}]},
    ]
    client = emu.client()
    reply = client.responses.create(model="m", instructions="be brief", input=items, temperature=0.2)
    assert reply.usage is not None and reply.usage.input_tokens == 8
    n = reply.usage.output_tokens
    # No cap asked: the context's 56 remaining tokens are the cap, and the model stops before it
    # (or is cut there), never at an arbitrary default
    assert reply.max_output_tokens == 56 and 16 <= n <= 56
    assert reply.status == ("completed" if n < 56 else "incomplete")
    assert reply.output_text == expected_text(n)
    assert (reply.instructions, reply.temperature) == ("be brief", 0.2)
    again = client.responses.create(model="m", instructions="be brief", input=items)
    assert again.usage is not None and again.usage.output_tokens == n  # deterministic
    # An oversized cap is clamped to what the context leaves, not refused (unlike chat)
    clamped = client.responses.create(model="m", input="a b c d", max_output_tokens=1000)
    assert clamped.max_output_tokens == 60


async def test_streaming_event_sequence(emu: Emu) -> None:
    client = emu.aclient()
    stream = await client.responses.create(model="m", input="hello", max_output_tokens=4, stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, completed = events[0], events[-1]
    assert created.type == "response.created" and completed.type == "response.completed"
    assert created.response.status == "in_progress" and created.response.output == []
    assert created.response.id == completed.response.id
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == expected_text(4)
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {completed.response.output[0].id}
    assert completed.response.output_text == expected_text(4) and completed.response.status == "incomplete"
    assert completed.response.usage is not None and completed.response.usage.output_tokens == 4


def test_stream_helper_accumulates(emu: Emu) -> None:
    with emu.client().responses.stream(model="m", input="hello", max_output_tokens=6) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == expected_text(6)


async def test_sse_frames_are_named_events(emu: Emu) -> None:
    body = {"model": "m", "input": "x", "max_output_tokens": 2, "stream": True}
    async with aiohttp.ClientSession() as session, session.post(f"{emu.url}/v1/responses", json=body) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        raw = (await resp.read()).decode()
    frames = raw.removesuffix("\n\n").split("\n\n")
    for frame in frames:
        event, data = frame.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data.removeprefix("data: "))["type"] == event.removeprefix("event: ")
    assert "[DONE]" not in raw


def test_function_call(emu: Emu) -> None:
    client = emu.client()
    reply = client.responses.create(model="m", input="is it raining? use get_weather", tools=[CLOCK, WEATHER])
    [call] = reply.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id is not None and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "x", "days": 1}
    assert reply.status == "completed" and reply.output_text == ""
    assert reply.usage is not None and reply.usage.output_tokens > 0
    assert [t.name for t in reply.tools if t.type == "function"] == ["get_time", "get_weather"]
    # The round trip: the tool's result goes back, and the model answers in prose
    follow: Any = [
        {"role": "user", "content": "is it raining? use get_weather"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny and warm"},
    ]
    prose = client.responses.create(model="m", input=follow, tools=[WEATHER], max_output_tokens=3)
    assert [item.type for item in prose.output] == ["message"] and prose.output_text == expected_text(3)
    assert prose.usage is not None and prose.usage.input_tokens == 5 + 3  # the question and the result


def test_tool_choice(emu: Emu) -> None:
    client = emu.client()

    def called(text: str, **kwargs: Any) -> str | None:
        reply = client.responses.create(
            model="m", input=text, tools=[CLOCK, WEATHER], max_output_tokens=2, **kwargs
        )
        item = reply.output[0]
        return item.name if item.type == "function_call" else None

    assert called("what is the weather?") is None  # auto, and no tool named: prose
    assert called("what is the weather?", tool_choice="required") == "get_time"
    assert called("tell me via get_weather", tool_choice="required") == "get_weather"
    assert called("no tools", tool_choice={"type": "function", "name": "get_weather"}) == "get_weather"
    assert called("call get_weather", tool_choice="none") is None


async def test_function_call_streaming(emu: Emu) -> None:
    client = emu.aclient()
    stream = await client.responses.create(
        model="m", input="get_weather please", tools=[WEATHER], stream=True
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas > 0
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = events[-3]
    assert done.type == "response.function_call_arguments.done" and done.arguments == arguments
    assert json.loads(arguments) == {"city": "x", "days": 1}
    final = events[-1]
    assert final.type == "response.completed"
    [call] = final.response.output
    assert call.type == "function_call" and call.arguments == arguments and call.name == "get_weather"
    async with client.responses.stream(model="m", input="get_weather please", tools=[WEATHER]) as helper:
        accumulated = await helper.get_final_response()
    assert accumulated.output[0].type == "function_call"


async def test_errors(emu: Emu) -> None:
    with pytest.raises(openai.NotFoundError) as missing_model:
        emu.client().responses.create(model="nope", input="x")
    assert "The model `nope` does not exist." in missing_model.value.message
    with pytest.raises(openai.BadRequestError) as too_long:
        emu.client().responses.create(model="m", input="w " * 64)
    assert "The engine prompt length 64 exceeds the max_model_len 64" in too_long.value.message
    cases: list[tuple[dict[str, Any], str | None, str]] = [
        ({"model": "m"}, "body.input", "Bad Request"),
        ({"input": 5}, "body.input", "Bad Request"),
        ({"input": [{"type": "telepathy"}]}, "body.input.0", "Bad Request"),
        ({"input": [{"role": "robot", "content": "x"}]}, "body.input.0.role", "Bad Request"),
        ({"input": "x", "max_output_tokens": "many"}, "body.max_output_tokens", "Bad Request"),
        ({"input": "x", "tools": [{"type": "function"}]}, "body.tools.0.name", "Bad Request"),
        ({"input": "x", "tool_choice": "sometimes"}, "body.tool_choice", "Bad Request"),
        ({"input": "w " * 70}, "input", "invalid_request_error"),
        ({"input": "x", "max_output_tokens": 0}, None, "BadRequestError"),
    ]
    async with aiohttp.ClientSession() as session:
        for body, param, kind in cases:
            async with session.post(f"{emu.url}/v1/responses", json=body) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["param"], error["type"]) == (400, param, kind), (body, error)
        body = {"input": "x", "previous_response_id": "resp_123"}
        async with session.post(f"{emu.url}/v1/responses", json=body) as resp:
            assert resp.status == 404
        async with session.get(f"{emu.url}/v1/responses/resp_123") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "Response with id 'resp_123' not found."
