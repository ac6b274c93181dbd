"""The gateway end to end: the official openai client, emulated models as real units on the
sandboxed systemd, the supervisor in between."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.chat import ChatCompletionToolParam

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.apikeys.engine import read_engine_key
from sparkctl.core import supervisor
from sparkctl.core.states import ModelState
from sparkctl.gateway.app import build_app
from sparkctl.gateway.context import GATEWAY
from tests.helpers import serve
from tests.integration.agents import documented_block
from tests.integration.conftest import drop_bus, reach
from tests.integration.gateway_env import Env, env

__all__ = ["env"]  # the fixture, used by name


async def test_openai_client_chat_stream_tools_embeddings_with_a_cold_start(env: Env) -> None:
    client = env.client()
    assert env.sup.view("chat").state is ModelState.STOPPED
    reply = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hello"}]
    )
    assert (
        reply.choices[0].message.content and reply.usage and reply.usage.completion_tokens == 12
    )  # shaped default
    assert env.sup.view("chat").state is ModelState.READY
    chunks = [
        c
        async for c in await client.chat.completions.create(
            model="chat-alias",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5 and chunks[-1].usage and chunks[-1].usage.completion_tokens == 5
    tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    call = await client.chat.completions.create(
        model="chat",
        tools=tools,
        messages=[{"role": "user", "content": "weather? use get_weather"}],
    )
    assert call.choices[0].finish_reason == "tool_calls"
    tool_calls = call.choices[0].message.tool_calls
    assert tool_calls and tool_calls[0].type == "function"
    assert json.loads(tool_calls[0].function.arguments) == {"city": "x"}
    stream = await client.chat.completions.create(
        model="chat",
        tools=tools,
        stream=True,
        messages=[{"role": "user", "content": "weather? use get_weather"}],
    )
    names = [
        function.name
        async for c in stream
        if c.choices
        and c.choices[0].delta.tool_calls
        and (function := c.choices[0].delta.tool_calls[0].function) is not None
        and function.name
    ]
    assert names == ["get_weather"]
    emb = await client.embeddings.create(model="chat", input=["one", "two words"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 32
    completion = await client.completions.create(model="chat", prompt="once upon", max_tokens=3)
    assert completion.choices[0].text.strip()
    # the sync client too
    sync = openai.OpenAI(base_url=f"{env.url}/v1", api_key=env.user, max_retries=0)
    reply2 = await asyncio.to_thread(
        lambda: sync.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "sync"}], max_tokens=2
        )
    )
    assert reply2.usage and reply2.usage.completion_tokens == 2


async def test_a_request_during_a_swap_is_served_after_it(env: Env) -> None:
    client = env.client()
    first = await client.chat.completions.create(model="ex-a", messages=[{"role": "user", "content": "a"}])
    assert first.choices[0].message.content
    # a slow stream holds ex-a while ex-b is requested: ex-b waits for ex-a to drain, then starts
    slow = asyncio.create_task(
        client.chat.completions.create(
            model="ex-a",
            messages=[{"role": "user", "content": "a"}],
            max_tokens=30,
            extra_body={"ignore_eos": True},
        )
    )
    b = await client.chat.completions.create(model="ex-b", messages=[{"role": "user", "content": "b"}])
    assert b.choices[0].message.content and (await slow).choices[0].message.content
    states = await env.unit_states()
    # whichever ran last stays loaded; never both
    assert sorted([states["sparkctl-ex-a.service"], states["sparkctl-ex-b.service"]]) == [
        "active",
        "inactive",
    ]


async def test_models_listing_and_admin_api(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{env.url}/v1/models", headers=env.headers()) as r:
            listing = await r.json()
        ids = {m["id"]: m for m in listing["data"]}
        assert listing["object"] == "list" and set(ids) >= {"chat", "slow", "echo", "off"}
        assert ids["off"]["status"] == "disabled" and ids["off"]["disabled_reason"] == "it hangs on load"
        assert ids["chat"]["state"] == "stopped" and ids["chat"]["owned_by"] == "sparkctl"
        assert (
            ids["chat"]["capabilities"] == ["chat", "tools", "embeddings"]
            and ids["chat"]["context_length"] == 4096
        )
        async with s.get(f"{env.url}/v1/models/chat-alias", headers=env.headers()) as r:
            assert (await r.json())["id"] == "chat"
        async with s.get(f"{env.url}/api/v1/status", headers=env.headers()) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        events = await s.get(f"{env.url}/api/v1/events", headers=env.headers(env.admin))
        async with s.post(f"{env.url}/api/v1/models/slow/start", headers=env.headers(env.admin)) as r:
            assert r.status == 202
        seen: list[str] = []
        async with asyncio.timeout(10):
            async for line in events.content:
                if line.startswith(b"data: ") and b'"slow"' in line:
                    seen.append(json.loads(line[6:])["state"])
                    if seen[-1] == "ready":
                        break
        assert seen[-2:] == ["starting", "ready"]
        events.close()
        async with s.get(f"{env.url}/api/v1/status", headers=env.headers(env.admin)) as r:
            status = {m["id"]: m for m in (await r.json())["models"]}
        assert status["slow"]["state"] == "ready" and status["slow"]["idle_stop_at"] > time.time()
        async with s.post(f"{env.url}/api/v1/models/slow/stop", headers=env.headers(env.admin)) as r:
            assert r.status == 202
        async with s.get(f"{env.url}/metrics") as r:  # loopback: no key needed
            text = await r.text()
        assert (
            'sparkctl_model_state{model="slow",state="stopping"}' in text
            or 'sparkctl_model_state{model="slow",state="stopped"}' in text
        )
        assert "sparkctl_model_starts_total" in text
        # … but not through a local reverse proxy, nor for a rebound DNS name: a key then
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"Forwarded": "for=203.0.113.9"},
            {"Host": "evil.example"},
        ):
            async with s.get(f"{env.url}/metrics", headers=headers) as r:
                assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized", headers
            async with s.get(f"{env.url}/metrics", headers={**headers, **env.headers()}) as r:
                assert r.status == 200, headers
        async with s.get(f"{env.url}/health") as r:
            assert r.status == 200


ERROR_CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    (
        "nested too deeply",
        "/v1/chat/completions",
        b'{"model": "chat", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        {},
        400,
        "invalid_json",
    ),
    # (description, path, body bytes, headers, expected status, code)
    ("malformed json", "/v1/chat/completions", b'{"model": "chat",', {}, 400, "invalid_json"),
    ("not an object", "/v1/chat/completions", b'["chat"]', {}, 400, "invalid_json"),
    ("invalid utf-8", "/v1/chat/completions", b'{"model": "chat", "x": "\xff\xfe"}', {}, 400, "invalid_json"),
    ("model of wrong type", "/v1/chat/completions", b'{"model": 42}', {}, 400, "invalid_model_name"),
    ("no model", "/v1/chat/completions", b'{"messages": []}', {}, 400, "missing_model"),
    ("empty body", "/v1/chat/completions", b"", {}, 400, "missing_model"),
    ("unknown model", "/v1/chat/completions", b'{"model": "nope"}', {}, 404, "model_not_found"),
    ("disabled model", "/v1/chat/completions", b'{"model": "off"}', {}, 400, "model_disabled"),
    ("path trick", "/v1/chat/completions", b'{"model": "../../etc/passwd"}', {}, 400, "invalid_model_name"),
    (
        "control characters",
        "/v1/chat/completions",
        b'{"model": "chat\\n\\u0000"}',
        {},
        400,
        "invalid_model_name",
    ),
    (
        "unit name trick",
        "/v1/chat/completions",
        b'{"model": "chat.service sparkctl-x"}',
        {},
        400,
        "invalid_model_name",
    ),
    ("path form unknown", "/v1/nope/chat/completions", b"{}", {}, 404, "model_not_found"),
    ("path form traversal", "/v1/..%2f..%2fetc/chat/completions", b"{}", {}, 404, "not_found"),
    ("path form control character", "/v1/chat%0a/chat/completions", b"{}", {}, 400, "invalid_model_name"),
    ("path form odd name", "/v1/a%20b/chat/completions", b"{}", {}, 400, "invalid_model_name"),
    ("unknown route", "/v1/nonsense", b"{}", {}, 404, "not_found"),
    # a route the model cannot serve: refused before any swap (the units are compared below)
    (
        "embeddings on a chat model",
        "/v1/embeddings",
        b'{"model": "slow", "input": "x"}',
        {},
        400,
        "route_not_supported",
    ),
    ("audio on a chat model", "/v1/slow/audio/transcriptions", b"{}", {}, 400, "route_not_supported"),
]


@pytest.mark.parametrize(
    ("what", "path", "body", "headers", "status", "code"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
async def test_error_paths_answer_the_envelope_and_touch_no_unit(
    env: Env, what: str, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    before = await env.unit_states()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{env.url}{path}",
            data=body,
            headers={**env.headers(), "Content-Type": "application/json", **headers},
            skip_auto_headers=["Content-Type"],
        ) as r,
    ):
        data = await r.json()
        assert r.status == status, data
    assert data["error"]["code"] == code and set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert await env.unit_states() == before
    assert all(v.state is ModelState.STOPPED for v in env.sup.views())


async def test_auth_comes_before_anything_and_size_before_reading(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x"}]})
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {env.user}"}):
            async with s.post(f"{env.url}/v1/chat/completions", data=body, headers=headers) as r:
                data = await r.json()
                assert r.status == 401 and data["error"]["code"] == "unauthorized"
                assert data["error"]["type"] == "authentication_error"
        # on the model's own port too
        async with s.post(f"{env.direct_url}/v1/chat/completions", data=body) as r:
            assert r.status == 401
        async with s.get(f"{env.url}/v1/models") as r:
            assert r.status == 401
        async with s.post(
            f"{env.url}/v1/chat/completions",
            data=b"x" * 100,
            headers={**env.headers(), "Content-Length": str(17 * 1024 * 1024)},
        ) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
    assert all(v.state is ModelState.STOPPED for v in env.sup.views())


async def test_x_api_key_and_the_direct_port(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        async with s.post(
            f"{env.direct_url}/v1/chat/completions", json=body, headers={"x-api-key": env.user}
        ) as r:
            data = await r.json()
            assert r.status == 200 and data["model"] == "chat"
        async with s.get(f"{env.direct_url}/v1/models", headers=env.headers()) as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["chat"]


async def test_big_multibyte_bodies_reach_the_engine_byte_identical(env: Env) -> None:
    text = "é€😀漢字 " * 400_000  # ~6 MB of multi-byte UTF-8
    raw = json.dumps(
        {"model": "echo", "messages": [{"role": "user", "content": text}]}, ensure_ascii=False
    ).encode()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{env.url}/v1/chat/completions",
            data=raw,
            headers={**env.headers(), "Content-Type": "application/json"},
        ) as r:
            echo = await r.json()
        assert (
            r.status == 200
            and echo["length"] == len(raw)
            and echo["sha256"] == hashlib.sha256(raw).hexdigest()
        )
        # the client's key stays here; the engine gets the engine key instead (#13)
        upstream_auth = {k.lower(): v for k, v in echo["headers"].items()}.get("authorization")
        assert upstream_auth == f"Bearer {read_engine_key(env.sup.settings.runtime.engine_env)}"
        assert env.user not in json.dumps(echo["headers"])
        # the query string reaches the engine as the client sent it, byte for byte
        reader, writer = await asyncio.open_connection("127.0.0.1", int(env.url.rsplit(":", 1)[1]))
        body = b'{"model": "echo"}'
        writer.write(
            b"POST /v1/chat/completions?a=%0d%0a&b=%23x&c=%2F HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {env.user}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["query"] == "a=%0d%0a&b=%23x&c=%2F", answer
        # an alias is rewritten to the id: the one change the engine sees
        aliased = raw.replace(b'"model":"echo"', b'"model":"echo-alias"').replace(
            b'"model": "echo"', b'"model": "echo-alias"'
        )
        async with s.post(
            f"{env.url}/v1/chat/completions",
            data=aliased,
            headers={**env.headers(), "Content-Type": "application/json"},
        ) as r:
            assert (await r.json())["model"] == "echo"
        # multipart: the audio bytes arrive untouched, the model field is rewritten
        audio = bytes(range(256)) * 20_000

        def form(model: str) -> bytes:
            return (
                b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
                + model.encode()
                + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                b"Content-Type: audio/wav\r\n\r\n" + audio + b"\r\n--XyZ--\r\n"
            )

        async with s.post(
            f"{env.url}/v1/audio/transcriptions",
            data=form("echo-alias"),
            headers={**env.headers(), "Content-Type": "multipart/form-data; boundary=XyZ"},
        ) as r:
            echo = await r.json()
        assert r.status == 200 and echo["path"] == "/v1/audio/transcriptions"
        assert echo["sha256"] == hashlib.sha256(form("echo")).hexdigest()


async def test_loading_feedback_and_prefer_wait_zero(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        async with s.post(
            f"{env.url}/v1/chat/completions", json=body, headers={**env.headers(), "Prefer": "wait=0"}
        ) as r:
            data = await r.json()
            assert (
                r.status == 503
                and data["error"]["code"] == "model_loading"
                and int(r.headers["Retry-After"]) >= 1
            )
        await asyncio.sleep(0.1)
        assert env.sup.view("slow").state is ModelState.STARTING  # not waiting, but it comes
        await env.sup.stop_model("slow")
        await reach(env.sup, slow=ModelState.STOPPED)
        t0 = time.monotonic()
        async with s.post(
            f"{env.url}/v1/chat/completions", json={**body, "stream": True}, headers=env.headers()
        ) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            lines = [line async for line in r.content]
        comments = [ln for ln in lines if ln.startswith(b": sparkctl: waiting for slow")]
        assert comments and time.monotonic() - t0 >= 2
        assert lines[-2] == b"data: [DONE]\n"


async def test_a_backend_crash_mid_stream_ends_the_client_stream_with_an_error_event(env: Env) -> None:
    client = env.client()
    stream = await client.chat.completions.create(
        model="crash",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=1000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    got = 0
    with pytest.raises(openai.APIError) as exc:
        async for _chunk in stream:
            got += 1
            if got == 3:
                await asyncio.to_thread(env.box.systemctl, "kill", "--signal=KILL", "sparkctl-crash.service")
                t0 = time.monotonic()
    assert time.monotonic() - t0 < 3
    assert "upstream_error" in str(exc.value.body) or "stopped" in str(exc.value)


async def test_a_frozen_engine_ends_its_stream_with_an_error_and_is_restarted(env: Env) -> None:
    """SIGSTOP: the unit stays active and systemd sees nothing, but the engine's health stops
    answering; within health_interval × health_failures its stream ends with an error event, and
    the next request gets a fresh engine."""
    body = {
        "model": "crash",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 1000,
        "ignore_eos": True,
        "stream": True,
    }
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{env.url}/v1/chat/completions", json=body, headers=env.headers())
        while not (await r.content.readline()).startswith(b"data: {"):
            pass
        main_pid = (
            await asyncio.to_thread(
                env.box.systemctl, "show", "-p", "MainPID", "--value", "sparkctl-crash.service"
            )
        ).stdout.strip()
        await asyncio.to_thread(env.box.systemctl, "kill", "--signal=SIGSTOP", "sparkctl-crash.service")
        t0 = time.monotonic()
        async with asyncio.timeout(8):
            rest = await r.content.read()
        assert time.monotonic() - t0 < 5
        last = [event.strip() for event in rest.split(b"\n\n") if event.strip()][-1]
        error = json.loads(last.removeprefix(b"data: "))["error"]
        assert error["code"] == "upstream_error" and "stopped answering" in error["message"], error
        short = {**body, "stream": False, "max_tokens": 3}
        async with s.post(f"{env.url}/v1/chat/completions", json=short, headers=env.headers()) as again:
            assert again.status == 200, await again.text()
    new_pid = (
        await asyncio.to_thread(
            env.box.systemctl, "show", "-p", "MainPID", "--value", "sparkctl-crash.service"
        )
    ).stdout.strip()
    assert new_pid not in ("0", main_pid)  # a new engine, not the frozen one thawed
    journal = await asyncio.to_thread(env.box.journal, unit="sparkctl-crash.service", lines=50)
    assert "Stopped" in journal or "Deactivated" in journal


async def test_a_client_disconnect_stops_the_generation_at_once(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        body = {
            "model": "crash",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
        }
        r = await s.post(f"{env.url}/v1/chat/completions", json=body, headers=env.headers())
        for _ in range(3):
            await r.content.readline()
        r.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            async with s.get(f"http://127.0.0.1:{env.ports['crash']}/metrics") as m:
                text = await m.text()
            if 'vllm:num_requests_running{model_name="crash"} 0' in text:
                break
            await asyncio.sleep(0.05)
        assert 'vllm:num_requests_running{model_name="crash"} 0' in text
        assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("path", ["wire", "aiohttp"])
async def test_a_client_that_hangs_up_while_waiting_is_counted_499_not_500(env: Env, path: str) -> None:
    """A client gone before its answer (here while its model loads) is not the server's failure:
    the access log and the metrics say 499, as nginx does, on either serving path."""
    headers = env.headers()
    if path == "aiohttp":
        headers["Origin"] = "http://localhost:3000"  # a CORS request: aiohttp's path serves it
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    line = 'sparkctl_requests_total{model="slow",route="/v1/chat/completions",status="%s"}'
    async with aiohttp.ClientSession() as s:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # the model takes 2 s to load
                await s.post(f"{env.url}/v1/chat/completions", json=body, headers=headers)
            raise AssertionError("answered while the model loads")
        for _ in range(100):
            async with s.get(f"{env.url}/metrics") as r:
                text = await r.text()
            if line % 499 in text:
                break
            await asyncio.sleep(0.05)
    assert f"{line % 499} 1.0" in text and line % 500 not in text


async def test_cors_preflight_and_headers(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.options(
            f"{env.url}/v1/chat/completions",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
        ) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        webview = "vscode-webview://0a1b2c3d"  # Cline's and Continue's panels, by pattern
        async with s.options(
            f"{env.url}/v1/chat/completions",
            headers={"Origin": webview, "Access-Control-Request-Method": "POST"},
        ) as r:
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == webview
        async with s.options(
            f"{env.url}/v1/chat/completions",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        ) as r:
            refused = await r.json()
            assert r.status == 403 and refused["error"]["code"] == "forbidden"
            assert "Access-Control-Allow-Origin" not in r.headers
        async with s.get(
            f"{env.url}/v1/models", headers={**env.headers(), "Origin": "http://evil.example"}
        ) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_path_form(env: Env) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        async with s.post(f"{env.url}/v1/chat/chat/completions", json=body, headers=env.headers()) as r:
            assert r.status == 200 and (await r.json())["model"] == "chat"


async def test_a_stalled_upload_gets_408_and_starts_nothing(env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(env.url.rsplit(":", 1)[1]))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + env.user.encode() + b"\r\nContent-Length: 100\r\n\r\n"
        b'{"model": "chat"'
    )
    await writer.drain()
    t0 = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408") and 0.9 < time.monotonic() - t0 < 3
    writer.close()
    assert env.sup.view("chat").state is ModelState.STOPPED


async def test_clients_that_hang_up_at_any_moment_leak_no_lease(env: Env) -> None:
    """wrk, browsers and impatient scripts hang up mid-request; each lease must still come back
    (a leaked one would hold the model against idle stops and swaps until drain_timeout)."""
    client = env.client()
    await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "warm"}])
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    async with aiohttp.ClientSession() as s:

        async def impatient(i: int) -> None:
            with contextlib.suppress(asyncio.TimeoutError, aiohttp.ClientError):
                async with asyncio.timeout(0.0002 * (i % 50)):
                    async with s.post(
                        f"{env.url}/v1/chat/completions",
                        json={**body, "stream": i % 2 == 0},
                        headers=env.headers(),
                    ) as r:
                        await r.read()

        for _ in range(4):
            await asyncio.gather(*(impatient(i) for i in range(500)))
    deadline = time.monotonic() + 3
    while env.sup.view("chat").leases and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert env.sup.view("chat").leases == 0


async def test_health_says_degraded_while_the_connection_to_systemd_is_remade(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "RECONNECT_FIRST", 1.0)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{env.url}/health") as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
        drop_bus(env.sup)
        await asyncio.sleep(0.2)
        async with s.get(f"{env.url}/health") as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "degraded"  # it still serves …
            assert "lost the connection to systemd" in body["reason"]  # … and says why
        for _ in range(100):
            async with s.get(f"{env.url}/health") as r:
                if (await r.json())["status"] == "ok":
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("never reconnected")


async def test_without_keys_only_local_json_clients_are_served(env: Env) -> None:
    """gateway.auth = "none": a web page (foreign Origin, a form's content type) or a rebound DNS
    name (foreign Host) drives nothing; the local programs it is meant for still work (#13)."""
    settings = env.sup.settings
    open_settings = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"auth": "none"})}
    )
    app = build_app(
        open_settings, env.sup.catalog, env.sup, engine_key=read_engine_key(settings.runtime.engine_env)
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = await serve(runner)
    url = f"http://127.0.0.1:{port}"
    before = await env.unit_states()
    chat = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    try:
        async with aiohttp.ClientSession() as s:
            refused = [
                ("POST", "/v1/chat/completions", {"Host": "evil.example:8009"}, chat, 403, "forbidden"),
                ("POST", "/api/v1/models/echo/stop", {"Host": "rebound.example"}, None, 403, "forbidden"),
                ("POST", "/v1/chat/completions", {"Origin": "http://evil.example"}, chat, 403, "forbidden"),
                ("GET", "/v1/models", {"Origin": "null"}, None, 403, "forbidden"),
            ]
            for method, path, headers, body, status, code in refused:
                async with s.request(method, url + path, headers=headers, json=body) as r:
                    assert (r.status, (await r.json())["error"]["code"]) == (status, code), (path, headers)
            form = {"Content-Type": "text/plain"}  # what a cross-site form can POST without a preflight
            async with s.post(url + "/v1/chat/completions", data=json.dumps(chat), headers=form) as r:
                assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"
            assert await env.unit_states() == before  # nothing refused reached the scheduler
            async with s.post(
                url + "/v1/chat/completions", json=chat, headers={"Origin": "http://localhost:3000"}
            ) as r:
                assert r.status == 200 and (await r.json())["model"] == "echo"
            async with s.get(url + "/v1/models", headers={"Host": "localhost:8009"}) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()


async def test_compressed_bodies_are_inflated_only_after_auth_within_the_limit(env: Env) -> None:
    """aiohttp used to inflate a gzip body before any middleware ran (CPU for anyone, no key
    needed) and forward it still labelled gzip (#13)."""
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "é" * 1000}]}).encode()
    bomb = gzip.compress(b"{" + b" " * (64 * 1024**2) + b"}")  # 64 MB of blanks, 64 KB on the wire
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.post(
            f"{env.url}/v1/chat/completions", data=gzip.compress(body), headers={**env.headers(), **gz}
        ) as r:
            echo = await r.json()
            assert r.status == 200 and echo["sha256"] == hashlib.sha256(body).hexdigest()
            assert "content-encoding" not in {k.lower() for k in echo["headers"]}  # plain bytes, said so
        async with s.post(f"{env.url}/v1/chat/completions", data=bomb, headers=gz) as r:
            assert r.status == 401  # no key: never inflated
        async with s.post(f"{env.url}/v1/chat/completions", data=bomb, headers={**env.headers(), **gz}) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
        br = {**env.headers(), "Content-Type": "application/json", "Content-Encoding": "br"}
        async with s.post(f"{env.url}/v1/chat/completions", data=body, headers=br) as r:
            assert r.status == 415 and (await r.json())["error"]["code"] == "unsupported_media_type"


async def test_the_bytes_of_waiting_bodies_have_a_budget(env: Env) -> None:
    settings = env.sup.settings
    tight = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"body_budget": 3000})})
    keys = await asyncio.to_thread(KeyFile, Path(settings.gateway.api_keys_file))
    engine_key = read_engine_key(settings.runtime.engine_env)
    app = build_app(tight, env.sup.catalog, env.sup, keys=keys, engine_key=engine_key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = await serve(runner)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    pad = "x " * 1000  # a body of about 2 KB: one fits in the budget, two do not
    long = {
        "model": "crash",
        "stream": True,
        "max_tokens": 60,
        "ignore_eos": True,
        "messages": [{"role": "user", "content": pad}],
    }
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json=long, headers=env.headers()) as first:
                assert first.status == 200
                await first.content.readline()  # streaming: its body is held meanwhile
                async with s.post(url, json=long, headers=env.headers()) as second:
                    refused = await second.json()
                    assert second.status == 429 and refused["error"]["code"] == "queue_full"
                    assert "gateway.body_budget" in refused["error"]["message"]
            for _ in range(50):  # the first one's bytes are given back once its hang-up is noticed
                short = {**long, "stream": False, "max_tokens": 2}
                async with s.post(url, json=short, headers=env.headers()) as third:
                    if third.status == 200:
                        break
                    assert third.status == 429
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the budget was never given back")
    finally:
        await runner.cleanup()


async def test_revoking_a_key_ends_its_streams_and_event_feed_at_once(env: Env, tmp_path: Path) -> None:
    """A revoked key (or an admin key made a plain one) ends what it holds open — a relayed
    stream with an error event, the admin event feed likewise — and nothing of other keys."""
    keys_path = tmp_path / "api-keys"
    store = KeyStore.load(keys_path)
    leaver, demoted = store.add("leaver"), store.add("demoted", admin=True)
    store.save(keys_path)
    async with aiohttp.ClientSession() as s:  # until the daemon's watcher has read the new keys
        for _ in range(100):
            async with s.get(f"{env.url}/v1/models", headers=env.headers(demoted)) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
    body = {
        "model": "crash",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 400,
        "stream": True,
        "ignore_eos": True,
    }
    async with aiohttp.ClientSession() as s:
        doomed = await s.post(f"{env.url}/v1/chat/completions", json=body, headers=env.headers(leaver))
        kept = await s.post(f"{env.url}/v1/chat/completions", json=body, headers=env.headers())
        feed = await s.get(f"{env.url}/api/v1/events", headers=env.headers(demoted))
        assert (doomed.status, kept.status, feed.status) == (200, 200, 200)
        for r in (doomed, kept):
            while not (await r.content.readline()).startswith(b"data: "):
                pass  # the loading comments
        await feed.content.readline()
        store = KeyStore.load(keys_path)
        store.revoke("leaver")
        store.save(keys_path)
        data = json.loads(keys_path.read_text())  # the same key, made a plain one (an edit by hand)
        data["keys"] = [{**k, "scope": "user"} if k["name"] == "demoted" else k for k in data["keys"]]
        keys_path.write_text(json.dumps(data))
        t0 = time.monotonic()
        async with asyncio.timeout(5):
            rest, feed_rest = await asyncio.gather(doomed.content.read(), feed.content.read())
        assert time.monotonic() - t0 < 5  # the watcher looks once a second
        last = [line for line in rest.split(b"\n\n") if line.strip()][-1]
        assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "unauthorized", last
        assert b"was revoked" in last
        assert b"event: error" in feed_rest and b"no longer an admin key" in feed_rest
        # the other key's stream runs on, and the revoked key is refused from now on
        async with asyncio.timeout(2):
            while not (await kept.content.readline()).startswith(b"data: {"):
                pass
        kept.close()
        async with s.get(f"{env.url}/v1/models", headers=env.headers(leaver)) as r:
            assert r.status == 401
    await asyncio.sleep(0.2)
    assert len(env.app[GATEWAY].holds) == 0  # every request let go of its hold


async def test_the_llm_cli_as_the_docs_configure_it(env: Env, tmp_path: Path) -> None:
    """docs/integrations.md's `llm` configuration, as written, against the real stack (with this
    test's URL and model put in place of the Spark's)."""
    home = tmp_path / "llm"
    home.mkdir()
    config = documented_block("llm", "yaml")
    assert "http://127.0.0.1:8009/v1" in config and "gpt-oss-20b" in config
    config = config.replace("http://127.0.0.1:8009/v1", f"{env.url}/v1").replace("gpt-oss-20b", "chat")
    (home / "extra-openai-models.yaml").write_text(config)
    llm = str(Path(sys.executable).with_name("llm"))
    environment = {**os.environ, "LLM_USER_PATH": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [llm, *args], capture_output=True, text=True, env=environment, timeout=60, check=False
        )

    assert (await asyncio.to_thread(run, "keys", "set", "sparkctl", "--value", env.user)).returncode == 0
    for extra in ((), ("--no-stream",)):
        done = await asyncio.to_thread(run, "-m", "spark-gpt-oss", *extra, "Say hello")
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
    refused = await asyncio.to_thread(
        run, "-m", "spark-gpt-oss", "-o", "max_tokens", "3", "hi", "--key", "sk-wrong"
    )
    assert refused.returncode != 0 and "401" in refused.stderr + refused.stdout


async def test_a_request_waiting_for_its_model_is_told_when_its_key_is_revoked(
    env: Env, tmp_path: Path
) -> None:
    """Revoked while its model loads: the stream ends with an error event, the plain request gets
    the envelope (invariant 2: nothing cut silently), and the start goes on for others."""
    keys_path = tmp_path / "api-keys"
    store = KeyStore.load(keys_path)
    waiter = store.add("waiter")
    store.save(keys_path)
    gw = env.app[GATEWAY]
    assert gw.keys is not None
    await asyncio.to_thread(gw.keys.refresh, force=True)
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    async with aiohttp.ClientSession() as s:
        stream = await s.post(
            f"{env.url}/v1/chat/completions", json={**body, "stream": True}, headers=env.headers(waiter)
        )
        plain = asyncio.create_task(
            s.post(f"{env.url}/v1/chat/completions", json=body, headers=env.headers(waiter))
        )
        assert (await stream.content.readline()).startswith(b": sparkctl: waiting for slow")  # it waits
        for _ in range(100):
            if env.sup.view("slow").waiting == 2:
                break
            await asyncio.sleep(0.01)
        assert env.sup.view("slow").state is ModelState.STARTING and env.sup.view("slow").waiting == 2
        store.revoke("waiter")
        store.save(keys_path)
        await asyncio.to_thread(gw.keys.refresh, force=True)
        assert gw.holds.revoke(gw.keys.store) == 2  # (what the key watcher does on the reload)
        async with asyncio.timeout(5):
            rest = await stream.content.read()
            answered = await plain
        last = [e.strip() for e in rest.split(b"\n\n") if e.strip()][-1]
        assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "unauthorized", rest
        assert answered.status == 401 and (await answered.json())["error"]["code"] == "unauthorized"
        answered.close()
    await reach(env.sup, slow=ModelState.READY)  # the start went on
    assert len(gw.holds) == 0


async def test_the_admin_feed_carries_each_model_s_eta_while_it_is_on_its_way(env: Env) -> None:
    """A starting model's state event carries its estimate; a model queued behind it (an
    exclusive one, which waits for the other to go) has a later one; a moved estimate comes as an
    `eta` event after a change."""
    async with aiohttp.ClientSession() as s:
        feed = await s.get(f"{env.url}/api/v1/events", headers=env.headers(env.admin))
        async with s.post(f"{env.url}/api/v1/models/slow/start", headers=env.headers(env.admin)) as r:
            assert r.status == 202
        client = env.client()
        behind = asyncio.create_task(
            client.chat.completions.create(model="ex-a", messages=[{"role": "user", "content": "hi"}])
        )
        states: dict[tuple[str, str], dict[str, Any]] = {}
        etas: list[dict[str, Any]] = []
        kind = "state"
        async with asyncio.timeout(20):
            async for raw in feed.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if kind == "state":
                        states[(data["model"], data["state"])] = data
                    elif kind == "eta":
                        etas.append(data)
                    if ("ex-a", "ready") in states:
                        break
        feed.close()
        await behind
    slow = states[("slow", "starting")]
    queued = states[("ex-a", "queued")]  # exclusive: it waits for slow to be ready, serve, stop
    assert slow["eta_seconds"] >= 1 and queued["eta_seconds"] > slow["eta_seconds"] + 1, states
    assert states[("ex-a", "ready")]["eta_seconds"] is None  # not on its way any more
    moved = [e["eta_seconds"] for e in etas if e["model"] == "ex-a"]
    # once slow is ready (nothing in flight) and stopping, ex-a's estimate comes down
    assert moved and moved[0] < queued["eta_seconds"] and moved == sorted(moved, reverse=True), etas
    await env.sup.stop_model("ex-a")
