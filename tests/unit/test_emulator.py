"""sparkctl.emulator: the real process, driven over the wire as vLLM's clients drive vLLM."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletion

from sparkctl.emulator.config import parse_args
from sparkctl.emulator.responses import EMBEDDING_DIM
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
MODEL = "some/model"
READY_RE = re.compile(
    r"^sparkctl-emulate: ready exec_to_ready_ms=(?P<ms>\S+) ready_unix=(?P<unix>\S+) "
    r"port=(?P<port>\d+) model=(?P<model>.+)$"
)
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat"
)
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "note": {"type": "string"},
            },
            "required": ["city", "days", "metric", "unit"],
        },
    },
}
CLOCK_TOOL: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def expected_text(n: int) -> str:
    return "".join(w + " " for w in itertools.islice(itertools.cycle(LOREM.split()), n))


@dataclass
class Emu:
    """One emulator process; its stdout is drained by a thread into `lines`."""

    proc: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    ready: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not self.ready:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if match := READY_RE.match(line):
                self.ready = match.groupdict()
        return self.ready

    def client(self, api_key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0)

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def start(*args: str, wait: bool = True) -> Emu:
    port = free_port()
    cmd = [sys.executable, "-m", "sparkctl.emulator", "serve", MODEL, "--port", str(port), *args]
    # From the repository root, so `-m sparkctl.emulator` resolves whether or not sparkctl is installed.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    emu = Emu(proc, port)

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            emu.lines.put(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    if wait:
        try:
            emu.wait_ready()
        except BaseException:
            emu.stop()
            raise
    return emu


@pytest.fixture
def spawn() -> Iterator[Callable[..., Emu]]:
    started: list[Emu] = []

    def _spawn(*args: str, wait: bool = True) -> Emu:
        emu = start(*args, wait=wait)
        started.append(emu)
        return emu

    try:
        yield _spawn
    finally:
        for emu in started:
            emu.stop()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emu]:
    """A fast emulator shared by the API tests; started with vLLM flags it does not know."""
    shared = start(
        "--served-model-name", "m", "alias", "--max-model-len", "64",
        "--mxfp4-layers", "moe,qkv", "--enforce-eager", "--speculative-config", '{"method":"mtp"}',
        "--tensor-parallel-size", "2",
    )  # fmt: skip
    try:
        yield shared
    finally:
        shared.stop()


def metric(text: str, name: str, labels: str = 'model_name="m"') -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    assert match, f"{name}{{{labels}}} missing from /metrics"
    return float(match.group(1))


async def get_metrics(session: aiohttp.ClientSession, emu: Emu) -> str:
    async with session.get(f"{emu.url}/metrics") as resp:
        return await resp.text()


# ------------------------------------------------------------------------------------------
# Arguments


def test_parse_args_takes_what_vllm_serve_takes() -> None:
    cfg = parse_args(
        ["serve", "org/m", "--mxfp4-layers", "moe,qkv", "--port", "9001", "--served-model-name", "a", "b",
         "--enforce-eager", "--speculative-config", '{"a":1}', "--max-model-len", "128", "--load-time", "1.5"]
    )  # fmt: skip
    assert (cfg.model, cfg.port, cfg.served_names) == ("org/m", 9001, ("a", "b"))
    assert (cfg.max_model_len, cfg.load_time, cfg.exit_code) == (128, 1.5, 1)
    assert parse_args(["--model", "x", "--some-flag", "v"]).served_names == ("x",)


# ------------------------------------------------------------------------------------------
# Routes through the official client


def test_unknown_vllm_flags_are_ignored(emu: Emu) -> None:
    assert emu.ready["model"] == "m" and int(emu.ready["port"]) == emu.port
    models = emu.client().models.list().data
    assert [m.id for m in models] == ["m", "alias"]


def test_chat(emu: Emu) -> None:
    messages: Any = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]
    reply = emu.client().chat.completions.create(model="m", messages=messages, max_tokens=5)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == "m"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected_text(5)
    assert choice.finish_reason == "length"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 5, 10)


def test_chat_without_max_tokens_ends_at_a_natural_length_and_echoes_any_accepted_name(emu: Emu) -> None:
    client = emu.client()
    parts: Any = [{"type": "text", "text": "look at this"}, {"type": "image_url", "image_url": {"url": "x"}}]
    lengths = set()
    for name in ("alias", MODEL, "m"):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": parts}])
        assert reply.model == name and reply.usage is not None and reply.usage.prompt_tokens == 3
        n = reply.usage.completion_tokens
        assert reply.choices[0].message.content == expected_text(n)
        # The context (64) leaves 61 tokens: the model stops by itself before, or that cap cuts it.
        assert 16 <= n <= 61 and reply.choices[0].finish_reason == ("stop" if n < 61 else "length")
        lengths.add(n)
    assert len(lengths) == 1  # the same prompt, the same answer


def test_chat_stop_sequence(emu: Emu) -> None:
    reply = emu.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=10, stop=["dolor"]
    )
    assert reply.choices[0].message.content == "lorem ipsum "
    assert reply.choices[0].finish_reason == "stop"


async def test_chat_streaming_with_usage(emu: Emu) -> None:
    stream = await emu.aclient().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(7)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 7
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 7)


async def test_chat_streaming_without_usage(emu: Emu) -> None:
    stream = await emu.aclient().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions(emu: Emu) -> None:
    client = emu.client()
    reply = client.completions.create(model="m", prompt="a b c", max_tokens=4)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == expected_text(4)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
    listed = client.completions.create(model="m", prompt=["a b", "c"], max_tokens=1)
    assert listed.usage is not None and listed.usage.prompt_tokens == 3


async def test_completions_streaming(emu: Emu) -> None:
    stream = await emu.aclient().completions.create(
        model="alias", prompt="a b", max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "text_completion" and c.model == "alias" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected_text(6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


def test_embeddings_base64_and_float(emu: Emu) -> None:
    client = emu.client()
    packed = client.embeddings.create(model="m", input=["hello world", "something else"])
    floats = client.embeddings.create(
        model="m", input=["hello world", "something else"], encoding_format="float"
    )
    assert packed.usage.prompt_tokens == 4 and packed.model == "m"
    assert [d.index for d in packed.data] == [0, 1]
    for a, b in zip(packed.data, floats.data, strict=True):
        assert len(a.embedding) == len(b.embedding) == EMBEDDING_DIM
        assert math.isclose(math.fsum(x * x for x in b.embedding), 1.0, rel_tol=1e-6)
        assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a.embedding, b.embedding, strict=True))
    assert floats.data[0].embedding != floats.data[1].embedding
    again = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    assert again.data[0].embedding == floats.data[0].embedding


def test_tool_call(emu: Emu) -> None:
    reply = emu.client().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather? ask get_weather"}],
        tools=[CLOCK_TOOL, WEATHER_TOOL],
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "x", "days": 1, "metric": True, "unit": "celsius"}


def first_call(reply: ChatCompletion) -> str | None:
    calls = reply.choices[0].message.tool_calls or []
    return calls[0].function.name if calls and calls[0].type == "function" else None


def test_tool_choice_rules(emu: Emu) -> None:
    client = emu.client()
    # auto: a tool is called only when the user names it (as a whole word), the first one named
    for text, called in [
        ("weather?", None),
        ("get_time_zone please", None),
        ("get_time then get_weather", "get_time"),
        ("use get_weather, not get_time", "get_weather"),
    ]:
        reply = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": text}],
            tools=[WEATHER_TOOL, CLOCK_TOOL],
            max_tokens=2,
        )
        assert first_call(reply) == called, text
        assert reply.choices[0].finish_reason == ("tool_calls" if called else "length")
    named = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "time?"}],
        tools=[WEATHER_TOOL, CLOCK_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = named.choices[0].message.tool_calls
    assert calls is not None and calls[0].type == "function"
    assert (calls[0].function.name, calls[0].function.arguments) == ("get_time", "{}")
    after_result: Any = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    prose = client.chat.completions.create(
        model="m", messages=after_result, tools=[WEATHER_TOOL], max_tokens=2
    )
    assert prose.choices[0].message.content == expected_text(2) and not prose.choices[0].message.tool_calls
    forced = client.chat.completions.create(
        model="m", messages=after_result, tools=[CLOCK_TOOL, WEATHER_TOOL], tool_choice="required"
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    assert first_call(forced) == "get_time"  # nothing named: the first tool
    declined = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert declined.choices[0].finish_reason == "stop"


async def test_tool_call_streaming(emu: Emu) -> None:
    stream = await emu.aclient().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "what does get_weather say?"}],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    ids, names, arguments, finishes = [], [], "", []
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                ids += [delta.id] if delta.id else []
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
            finishes += [choice.finish_reason] if choice.finish_reason else []
    assert len(ids) == 1 and ids[0].startswith("call_") and names == ["get_weather"]
    assert json.loads(arguments)["city"] == "x"
    assert finishes == ["tool_calls"]


def test_context_length_is_a_400(emu: Emu) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        emu.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "w " * 60}], max_tokens=10
        )
    assert caught.value.status_code == 400
    assert "maximum context length is 64 tokens" in caught.value.message
    assert "requested 70 tokens (60 in the messages, 10 in the completion)" in caught.value.message


def test_unknown_model_is_a_404(emu: Emu) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        emu.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    assert "The model `nope` does not exist." in caught.value.message


# ------------------------------------------------------------------------------------------
# Raw HTTP


async def test_malformed_requests_get_vllm_error_bodies(emu: Emu) -> None:
    # What vLLM's pydantic models reject, FastAPI's validation handler answers: type "Bad Request",
    # the offending field as param, pydantic's error in the message; even for an unknown model.
    chat = "/v1/chat/completions"
    user = [{"role": "user", "content": "x"}]
    invalid: list[tuple[str, Any, str, str]] = [
        (chat, b"{not json", "body.0", "json_invalid"),
        (chat, [1, 2], "body", "model_attributes_type"),
        (chat, {"model": "nope"}, "body.messages", "missing"),
        (chat, {"messages": "hello"}, "body.messages", "list_type"),
        (chat, {"messages": [1]}, "body.messages.0", "model_attributes_type"),
        (chat, {"messages": user, "max_tokens": "nine"}, "body.max_tokens", "int_parsing"),
        (chat, {"messages": user, "max_tokens": 1.5}, "body.max_tokens", "int_from_float"),
        (chat, {"messages": user, "stream": "maybe"}, "body.stream", "bool_parsing"),
        (chat, {"messages": user, "stop": [1]}, "body.stop.0", "string_type"),
        (chat, {"messages": user, "stream_options": {"include_usage": True}}, "body", "value_error"),
        (chat, {"messages": user, "tool_choice": "auto"}, "body", "value_error"),
        ("/v1/completions", {"model": "m"}, "body.prompt", "missing"),
        ("/v1/completions", {"prompt": 42}, "body.prompt", "string_type"),
        ("/v1/embeddings", {"input": {"a": 1}}, "body.input", "string_type"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, "body.encoding_format", "literal_error"),
    ]
    async with aiohttp.ClientSession() as session:
        for path, body, param, kind in invalid:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with session.post(f"{emu.url}{path}", data=data) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 400 and error["code"] == 400, (path, body, error)
                assert (error["type"], error["param"]) == ("Bad Request", param), (body, error)
                assert error["message"].startswith("1 validation error:") and f"'{kind}'" in error["message"]
        # Lax, as pydantic is: vLLM takes these, so the emulator does
        lax = {"messages": user, "max_tokens": "3", "stream": "false", "ignore_eos": 1}
        async with session.post(f"{emu.url}{chat}", json=lax) as resp:
            assert resp.status == 200 and (await resp.json())["usage"]["completion_tokens"] == 3
        # The handler's own refusals are typed errors
        refused = [
            ({"messages": user, "max_tokens": 0}, 400, "BadRequestError", "max_tokens must be at least 1, got 0."),
            ({"messages": user, "model": "x"}, 404, "NotFoundError", "The model `x` does not exist."),
            ({"messages": user, "min_tokens": 9, "max_tokens": 5}, 400, "BadRequestError",
             "min_tokens must be less than or equal to max_tokens=5, got 9."),
        ]  # fmt: skip
        for body, status, kind, message in refused:
            async with session.post(f"{emu.url}{chat}", json=body) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["type"], error["message"], error["param"]) == (
                    status,
                    kind,
                    message,
                    None,
                )
        async with session.post(f"{emu.url}/v1/embeddings", json={"model": "x", "input": "a"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "NotFoundError"


async def test_sse_framing(emu: Emu) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emu.url}/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        raw = (await resp.read()).decode()
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert len(chunks) == 1 + 4 + 1  # role, one per token, finish
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [w + " " for w in expected_text(4).split()] == [
        c["choices"][0]["delta"]["content"] for c in chunks[1:-1]
    ]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


async def test_open_routes(emu: Emu) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/health", "/ping"):
            async with session.get(f"{emu.url}{path}") as resp:
                assert resp.status == 200 and await resp.read() == b""
        async with session.get(f"{emu.url}/version") as resp:
            assert "sparkctl" in (await resp.json())["version"]
        async with session.get(f"{emu.url}/v1/models") as resp:
            card = (await resp.json())["data"][0]
        assert card["object"] == "model" and card["owned_by"] == "vllm" and card["root"] == MODEL
        assert card["max_model_len"] == 64 and card["parent"] is None and isinstance(card["created"], int)
        text = await get_metrics(session, emu)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total"):  # fmt: skip
        assert metric(text, name) >= 0
    assert metric(text, "vllm:request_success_total", 'finished_reason="length",model_name="m"') >= 0


# ------------------------------------------------------------------------------------------
# Process lifetime


async def test_disconnect_stops_generation(spawn: Callable[..., Emu]) -> None:
    # Tokens 0.5 s apart: a server that noticed the hang-up only at its next write would be late.
    emu = spawn("--served-model-name", "m", "--tokens-per-second", "2")
    body = {"model": "m", "prompt": "x", "max_tokens": 1000, "stream": True}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{emu.url}/v1/completions", json=body)
        await resp.content.readline()
        assert metric(await get_metrics(session, emu), "vllm:num_requests_running") == 1
        resp.close()  # drop the connection mid-stream
        deadline = time.monotonic() + 0.3
        while metric(text := await get_metrics(session, emu), "vllm:num_requests_running") != 0:
            assert time.monotonic() < deadline, "generation still running after the client left"
            await asyncio.sleep(0.01)
        generated = metric(text, "vllm:generation_tokens_total")
        assert generated == 1
        await asyncio.sleep(0.6)
        after = await get_metrics(session, emu)
    assert metric(after, "vllm:generation_tokens_total") == generated
    assert metric(after, "vllm:request_success_total", 'finished_reason="abort",model_name="m"') == 1


def test_binds_only_after_load_time(spawn: Callable[..., Emu]) -> None:
    began = time.monotonic()
    emu = spawn("--load-time", "0.6", wait=False)
    refused = 0
    while time.monotonic() - began < 0.45:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", emu.port), 1):
            pass
        refused += 1
        time.sleep(0.05)
    assert refused >= 3
    ready = emu.wait_ready()
    assert 600 <= float(ready["ms"]) < 10_000
    assert abs(float(ready["unix"]) - time.time()) < 5
    assert ready["model"] == MODEL
    socket.create_connection(("127.0.0.1", emu.port), 1).close()


async def test_sigterm_ends_open_streams_promptly(spawn: Callable[..., Emu]) -> None:
    emu = spawn("--tokens-per-second", "5")
    body = {"prompt": "x", "max_tokens": 1000, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emu.url}/v1/completions", json=body) as resp,
    ):
        await resp.content.readline()
        sent = time.monotonic()
        emu.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(emu.proc.wait, 5)
        elapsed = time.monotonic() - sent
    assert code == 0
    assert elapsed < 1.0


def test_stop_time_keeps_the_process_past_sigterm_without_listening(spawn: Callable[..., Emu]) -> None:
    """--stop-time S: an engine slow to tear down (or, with a large S, hung in it), for the
    units' stop timeout to end."""
    emu = spawn("--stop-time", "2")
    emu.proc.send_signal(signal.SIGTERM)
    for _ in range(100):  # it stops listening at once ...
        try:
            socket.create_connection(("127.0.0.1", emu.port), 0.5).close()
        except ConnectionRefusedError:
            break
        except ConnectionResetError:
            pass  # accepted as the listener closed
        time.sleep(0.02)
    else:
        raise AssertionError("still listening after SIGTERM")
    time.sleep(0.5)
    assert emu.proc.poll() is None  # ... but has not exited
    assert emu.proc.wait(10) == 0


async def test_crash_after_cuts_streams(spawn: Callable[..., Emu]) -> None:
    emu = spawn("--crash-after", "0.3", "--exit-code", "7", "--tokens-per-second", "50")
    body = {"prompt": "x", "max_tokens": 1000, "stream": True}
    seen: list[bytes] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{emu.url}/v1/completions", json=body) as resp,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                seen.append(line)
    assert len(seen) > 5 and b"data: [DONE]\n" not in seen
    assert await asyncio.to_thread(emu.proc.wait, 5) == 7


async def test_unhealthy_after(spawn: Callable[..., Emu]) -> None:
    emu = spawn("--unhealthy-after", "0.3")
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 3
        while not statuses or statuses[-1] == 200:
            assert time.monotonic() < deadline
            async with session.get(f"{emu.url}/health") as resp:
                statuses.append(resp.status)
            await asyncio.sleep(0.05)
        async with session.get(f"{emu.url}/v1/models") as resp:
            assert resp.status == 200
    assert statuses[0] == 200 and statuses[-1] == 503


def test_memory_is_resident(spawn: Callable[..., Emu]) -> None:
    plain, heavy = spawn(wait=False), spawn("--memory-mb", "128", wait=False)

    def rss_kib(emu: Emu) -> int:
        emu.wait_ready()
        status = Path(f"/proc/{emu.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]

    assert rss_kib(heavy) - rss_kib(plain) >= 128 * 1024 * 0.98


async def test_api_key(spawn: Callable[..., Emu]) -> None:
    emu = spawn("--api-key", "sesame")
    with pytest.raises(openai.AuthenticationError) as caught:
        emu.client(api_key="wrong").models.list()
    assert caught.value.status_code == 401
    assert [m.id for m in emu.client(api_key="sesame").models.list().data] == [MODEL]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{emu.url}/v1/chat/completions", json={"messages": []}) as resp:
            assert resp.status == 401 and await resp.json() == {"error": "Unauthorized"}
        for path in ("/health", "/version", "/metrics"):
            async with session.get(f"{emu.url}{path}") as resp:
                assert resp.status == 200, path
        # As in vLLM (vllm-project/vllm#51572): the key goes in `Authorization: Bearer`, on every
        # /v1 route; an Anthropic client's `x-api-key` is refused
        message = {"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "model": MODEL}
        async with session.post(
            f"{emu.url}/v1/messages", json=message, headers={"x-api-key": "sesame"}
        ) as resp:
            assert resp.status == 401 and await resp.json() == {"error": "Unauthorized"}
        bearer = {"Authorization": "Bearer sesame"}
        async with session.post(f"{emu.url}/v1/messages", json=message, headers=bearer) as resp:
            assert resp.status == 200
        # /tokenize and /detokenize are outside /v1: open, as in vLLM
        async with session.post(f"{emu.url}/tokenize", json={"prompt": "a b"}) as resp:
            assert resp.status == 200
