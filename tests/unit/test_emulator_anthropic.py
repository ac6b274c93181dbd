"""sparkctl.emulator's /v1/messages (Anthropic Messages, as vLLM serves it), driven by the official
anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.unit.test_emulator import MODEL, Emu, expected_text, spawn, start

__all__ = ["spawn"]  # a fixture, used by name

WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
CLOCK: Any = {"name": "get_time", "input_schema": {"type": "object"}}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emu]:
    shared = start("--served-model-name", "m", "--max-model-len", "64")
    try:
        yield shared
    finally:
        shared.stop()


def client(emu: Emu, api_key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.url, api_key=api_key, max_retries=0)


def aclient(emu: Emu) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emu.url, api_key="none", max_retries=0)


def test_message(emu: Emu) -> None:
    reply = client(emu).messages.create(
        model="m", max_tokens=5, system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.id.startswith("msg_") and reply.type == "message" and reply.role == "assistant"
    assert reply.model == "m"
    [block] = reply.content
    assert block.type == "text" and block.text == expected_text(5)
    assert reply.stop_reason == "max_tokens" and reply.stop_sequence is None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (4, 5)


def test_natural_end_system_blocks_and_determinism(emu: Emu) -> None:
    request: Any = {
        "model": "m",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "you are terse"}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "tell me"}, {"type": "text", "text": "a story"}],
            },
        ],
    }
    first = client(emu).messages.create(**request)
    assert first.usage.input_tokens == 7
    n = first.usage.output_tokens
    assert 16 <= n <= 50 and first.stop_reason == ("end_turn" if n < 50 else "max_tokens")
    assert first.content[0].type == "text" and first.content[0].text == expected_text(n)
    assert client(emu).messages.create(**request).usage.output_tokens == n


def test_stop_sequences(emu: Emu) -> None:
    reply = client(emu).messages.create(
        model="m", max_tokens=10, stop_sequences=["dolor"], messages=[{"role": "user", "content": "x"}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "lorem ipsum "
    assert (reply.stop_reason, reply.stop_sequence) == ("stop_sequence", "dolor")


def test_raw_stream_event_sequence(emu: Emu) -> None:
    events = list(
        client(emu).messages.create(
            model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert [e.type for e in events] == [  # the SDK drops the ping (see test_sse_frames)
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start_event, delta = events[0], events[-2]
    assert start_event.type == "message_start" and start_event.message.id.startswith("msg_")
    assert start_event.message.usage.input_tokens == 1 and start_event.message.content == []
    texts = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert "".join(texts) == expected_text(3)
    assert delta.type == "message_delta" and delta.delta.stop_reason == "max_tokens"
    assert (delta.usage.input_tokens, delta.usage.output_tokens) == (1, 3)


async def test_sse_frames(emu: Emu) -> None:
    body = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with aiohttp.ClientSession() as session, session.post(f"{emu.url}/v1/messages", json=body) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        raw = (await resp.read()).decode()
    kinds = []
    for frame in raw.removesuffix("\n\n").split("\n\n"):
        event, data = frame.split("\n")
        kinds.append(event.removeprefix("event: "))
        assert json.loads(data.removeprefix("data: "))["type"] == kinds[-1]
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_stream_helper(emu: Emu) -> None:
    async with aclient(emu).messages.stream(
        model="m", max_tokens=6, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()
    assert text == expected_text(6)
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_tool_use_round_trip(emu: Emu) -> None:
    api = client(emu)
    question: Any = {"role": "user", "content": "is it cold? ask get_weather"}
    call = api.messages.create(model="m", max_tokens=40, tools=[CLOCK, WEATHER], messages=[question])
    assert call.stop_reason == "tool_use"
    [use] = call.content
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_")
    assert use.input == {"city": "x", "unit": "c"}
    history: Any = [
        question,
        {"role": "assistant", "content": [use.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "minus five"}],
        },
    ]
    answer = api.messages.create(model="m", max_tokens=4, tools=[CLOCK, WEATHER], messages=history)
    assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"
    assert answer.usage.input_tokens == 5 + 2  # the question and the result; the call is not counted


async def test_tool_use_streamed(emu: Emu) -> None:
    async with aclient(emu).messages.stream(
        model="m",
        max_tokens=40,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "get_weather for Oslo"}],
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "input_json" in kinds and kinds[-1] == "message_stop"
    assert final.stop_reason == "tool_use"
    [use] = final.content
    assert use.type == "tool_use" and use.input == {"city": "x", "unit": "c"}


def test_tool_choice(emu: Emu) -> None:
    api = client(emu)

    def used(text: str, **kwargs: Any) -> str | None:
        reply = api.messages.create(
            model="m",
            max_tokens=2,
            tools=[CLOCK, WEATHER],
            messages=[{"role": "user", "content": text}],
            **kwargs,
        )
        block = reply.content[0]
        return block.name if block.type == "tool_use" else None

    assert used("what is the weather like?") is None  # auto, nothing named: prose
    assert used("what is the weather like?", tool_choice={"type": "any"}) == "get_time"
    assert used("anything", tool_choice={"type": "tool", "name": "get_weather"}) == "get_weather"
    assert used("use get_weather", tool_choice={"type": "none"}) is None
    assert used("use get_weather", tool_choice={"type": "auto"}) == "get_weather"


def test_count_tokens(emu: Emu) -> None:
    counted = client(emu).messages.count_tokens(
        model="m", system="a b", messages=[{"role": "user", "content": "c d e"}]
    )
    assert counted.input_tokens == 5


async def test_errors(emu: Emu) -> None:
    api = client(emu)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        api.messages.create(model="nope", max_tokens=4, messages=[{"role": "user", "content": "x"}])
    # The route's own refusals come in Anthropic's shape, with vLLM's error type
    assert unknown.value.body == {
        "type": "error",
        "error": {"type": "NotFoundError", "message": "The model `nope` does not exist."},
    }
    with pytest.raises(anthropic.BadRequestError) as too_long:
        api.messages.create(model="m", max_tokens=30, messages=[{"role": "user", "content": "w " * 40}])
    assert "maximum context length is 64 tokens" in str(too_long.value.body)
    # What vLLM's pydantic model rejects keeps its OpenAI shape: FastAPI answers before the route
    user = [{"role": "user", "content": "x"}]
    invalid: list[tuple[dict[str, Any], str]] = [
        ({"model": "m", "messages": user}, "body.max_tokens"),
        ({"messages": user, "max_tokens": 3}, "body.model"),
        ({"model": "m", "messages": user, "max_tokens": 0}, "body.max_tokens"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}], "max_tokens": 3}, "body.messages.0.role"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "smell"}]}], "max_tokens": 3},
         "body.messages.0.content.0.type"),
        ({"model": "m", "messages": user, "max_tokens": 3, "tools": [{"name": "t"}]}, "body.tools.0.input_schema"),
        ({"model": "m", "messages": user, "max_tokens": 3, "tool_choice": {"type": "tool"}}, "body.tool_choice"),
    ]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for body, param in invalid:
            async with session.post(f"{emu.url}/v1/messages", json=body) as resp:
                data = await resp.json()
                assert resp.status == 400 and "type" not in data, (body, data)
                assert (data["error"]["type"], data["error"]["param"]) == ("Bad Request", param), (body, data)
        body = {"model": "m", "messages": [], "max_tokens": 3}
        async with session.post(f"{emu.url}/v1/messages", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["message"] == "messages must contain at least one item"


def test_api_key_is_a_bearer_token(spawn: Callable[..., Emu]) -> None:
    emu = spawn("--api-key", "sesame")
    messages: Any = [{"role": "user", "content": "x"}]

    def bearer(token: str) -> anthropic.Anthropic:
        # auth_token is always sent as `Authorization: Bearer`, the one header vLLM's check reads
        return anthropic.Anthropic(base_url=emu.url, auth_token=token, api_key=None, max_retries=0)

    with pytest.raises(anthropic.AuthenticationError):
        bearer("wrong").messages.create(model=MODEL, max_tokens=2, messages=messages)
    assert (
        bearer("sesame").messages.create(model=MODEL, max_tokens=2, messages=messages).usage.output_tokens
        == 2
    )
