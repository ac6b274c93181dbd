"""HTTP/1.1 at the wire, through the gateway to real engines (#18): what a lean relay must not get
wrong. Raw sockets, so that nothing a client library smooths over is hidden: smuggling attempts,
pipelining, chunked request bodies, `Expect: 100-continue`, clients that hang up at any byte, and
a kept-alive connection that goes on after errors, on both sides of the gateway."""

from __future__ import annotations

import asyncio
import json
import time

from sparkctl.core.states import ModelState
from sparkctl.gateway.context import GATEWAY
from tests.integration.gateway_env import Env, env

__all__ = ["env"]  # the fixture, used by name

Head = tuple[int, dict[str, str]]


async def connect(env: Env) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(env.url.rsplit(":", 1)[1]))


def request(env: Env, body: bytes, *, extra: str = "", length: bool = True, path: str = "") -> bytes:
    head = (
        f"POST {path or '/v1/chat/completions'} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {env.user}\r\n{extra}"
    )
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (by length or chunks)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if status < 200:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body
        body += chunk[:-2]


def echo_body(**more: object) -> bytes:
    return json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}], **more}).encode()


async def test_smuggling_attempts_are_refused_and_the_connection_closed(env: Env) -> None:
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"  # what a smuggler hides in a body
    body = b"0\r\n\r\n" + hidden
    attempts = [
        # CL and TE together (RFC 9112 §6.1: an attack or a broken client either way)
        request(
            env, body, extra=f"Transfer-Encoding: chunked\r\nContent-Length: {len(body)}\r\n", length=False
        ),
        # two Content-Lengths that disagree
        request(env, hidden, extra="Content-Length: 0\r\n"),
        # a Transfer-Encoding the server does not finish with chunked
        request(env, body, extra="Transfer-Encoding: chunked, identity\r\n", length=False),
    ]
    for attempt in attempts:
        reader, writer = await connect(env)
        writer.write(attempt)
        status, _, _ = await response(reader)
        assert status == 400, attempt[:200]
        # the connection ends: nothing after the refused request is read as a request
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    assert env.sup.view("echo").state is ModelState.STOPPED  # nothing reached the scheduler


async def test_pipelined_requests_are_answered_in_order(env: Env) -> None:
    reader, writer = await connect(env)
    ids = [f"pipe-{i}" for i in range(4)]
    writer.write(
        b"".join(request(env, echo_body(n=i), extra=f"X-Request-Id: {rid}\r\n") for i, rid in enumerate(ids))
    )
    for i, rid in enumerate(ids):
        status, headers, body = await response(reader)
        assert status == 200 and headers["x-request-id"] == rid
        seen = json.loads(body)
        assert json.loads(seen["body_prefix"])["n"] == i
    writer.close()


async def test_a_chunked_request_body_reaches_the_engine_whole_with_a_length(env: Env) -> None:
    body = echo_body(pad="é" * 3000)
    chunks = [body[:10], body[10:2000], body[2000:]]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    reader, writer = await connect(env)
    writer.write(request(env, b"", extra="Transfer-Encoding: chunked\r\n", length=False))
    for part in (framed[:7], framed[7:3000], framed[3000:]):  # split across packets, off the frames
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.01)
    status, _, answer = await response(reader)
    seen = json.loads(answer)
    assert status == 200 and seen["length"] == len(body)
    up = {k.lower(): v for k, v in seen["headers"].items()}
    assert up["content-length"] == str(len(body)) and "transfer-encoding" not in up
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body(env: Env) -> None:
    body = echo_body()
    reader, writer = await connect(env)
    writer.write(
        request(env, b"", extra=f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n", length=False)
    )
    status, _, _ = await response(reader)
    assert status == 100  # and only now does the body go
    writer.write(body)
    status, _, answer = await response(reader)
    assert status == 200
    up = {k.lower() for k in json.loads(answer)["headers"]}
    assert "expect" not in up  # the gateway had the body before anything went up
    writer.close()


async def test_clients_hanging_up_at_any_byte_leave_no_lease_and_the_gateway_serving(env: Env) -> None:
    client = env.client()
    await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "warm"}])
    for stream in (False, True):
        whole = request(
            env,
            json.dumps(
                {
                    "model": "chat",
                    "messages": [{"role": "user", "content": "x y"}],
                    "max_tokens": 50,
                    "stream": stream,
                }
            ).encode(),
        )
        for cut in (1, 40, len(whole) - 30, len(whole) - 1, len(whole), len(whole)):
            _, writer = await connect(env)
            writer.write(whole[:cut])
            await writer.drain()
            if cut == len(whole):
                await asyncio.sleep(0.05)  # let it be served a moment, then go
            writer.transport.abort()  # an RST, as a killed client sends
    deadline = time.monotonic() + 5
    while env.sup.view("chat").leases and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert env.sup.view("chat").leases == 0
    answer = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "again"}]
    )
    assert answer.choices[0].message.content


async def test_one_connection_goes_on_after_errors_on_both_sides(env: Env) -> None:
    reader, writer = await connect(env)
    steps: list[tuple[bytes, int]] = [
        (request(env, b'{"model": "nope", "messages": []}'), 404),  # routing
        (request(env, b'{"model": '), 400),  # the gateway's own parse
        (request(env, echo_body(), extra="X-Api-Key: wrong\r\n").replace(env.user.encode(), b"wrong"), 401),
        # the engine's own error, relayed in the envelope: the engine's connection stays too
        (request(env, echo_body(), path="/v1/no/such/route/at/all"), 404),
        (request(env, echo_body()), 200),
        (request(env, echo_body()), 200),
    ]
    for raw, expected in steps:
        writer.write(raw)
        status, headers, body = await response(reader)
        assert status == expected, (raw[:80], body[:300])
        assert headers.get("connection", "").lower() != "close"
        if status >= 400:
            assert "error" in json.loads(body)
    writer.close()
    pool = env.app[GATEWAY].engines
    # one connection to the echo engine carried both its error and the requests after it
    assert pool.idle(env.ports["echo"]) == 1


async def test_the_engine_side_connection_is_reused_and_survives_an_engine_restart(env: Env) -> None:
    client = env.client()
    for _ in range(5):
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    pool = env.app[GATEWAY].engines
    assert pool.idle(env.ports["chat"]) == 1  # requests one after another: one warm connection
    await env.sup.stop_model("chat", now=True)  # its engine goes, and the warm connection with it
    answer = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "back"}]
    )
    assert answer.choices[0].message.content


async def test_a_connection_goes_on_in_aiohttp_after_requests_served_off_the_wire(env: Env) -> None:
    """Requests served off the wire (gateway/wire.py), then one only aiohttp serves (a GET, a
    chunked body), pipelined behind them: every answer comes, in order, on the one connection."""
    body = echo_body(n=2)
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    reader, writer = await connect(env)
    writer.write(
        request(env, echo_body(n=0), extra="X-Request-Id: first\r\n")
        + f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {env.user}\r\n\r\n".encode()
        + request(env, b"", extra="Transfer-Encoding: chunked\r\nX-Request-Id: third\r\n", length=False)
        + framed
        + request(env, echo_body(n=3), extra="X-Request-Id: fourth\r\n")
    )
    status, headers, answer = await response(reader)
    assert status == 200 and headers["x-request-id"] == "first"
    status, _, answer = await response(reader)
    assert status == 200 and any(m["id"] == "echo" for m in json.loads(answer)["data"])
    for rid, n in (("third", 2), ("fourth", 3)):
        status, headers, answer = await response(reader)
        seen = json.loads(answer)
        assert status == 200 and headers["x-request-id"] == rid
        assert json.loads(seen["body_prefix"])["n"] == n and seen["length"] == len(echo_body(n=n))
    writer.close()


async def test_connection_close_and_a_late_body_end_the_connection(env: Env) -> None:
    reader, writer = await connect(env)
    writer.write(request(env, echo_body(), extra="Connection: close\r\n"))
    status, headers, _ = await response(reader)
    assert status == 200 and headers["connection"].lower() == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    # a body that does not come within gateway.body_timeout (1 s here): 408, and the end
    reader, writer = await connect(env)
    writer.write(request(env, echo_body())[:-10])
    status, headers, body = await response(reader)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert env.sup.view("echo").leases == 0


async def test_a_malformed_request_after_good_ones_is_answered_in_turn(env: Env) -> None:
    reader, writer = await connect(env)
    writer.write(
        request(env, echo_body(), extra="X-Request-Id: good\r\n")
        + b"POST /v1/chat HTTP/1.1\r\nBad Header\r\n\r\n"
    )
    status, headers, _ = await response(reader)
    assert status == 200 and headers["x-request-id"] == "good"
    status, headers, body = await response(reader)
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_a_burst_of_pipelined_requests_is_not_taken_for_one_long_head(env: Env) -> None:
    """More requests in one write than a head may be long (gateway/wire.py: MAX_HEAD): each is
    answered, in order."""
    n = 300
    burst = b"".join(request(env, echo_body(n=i), extra=f"X-Request-Id: burst-{i}\r\n") for i in range(n))
    assert len(burst) > 64 * 1024
    reader, writer = await connect(env)
    writer.write(burst)
    for i in range(n):
        status, headers, _ = await response(reader)
        assert status == 200 and headers["x-request-id"] == f"burst-{i}"
    writer.close()


async def test_a_header_over_16_kib_is_refused_on_the_wire_as_by_aiohttp(env: Env) -> None:
    long = "x" * 17000
    for first in (True, False):  # a connection's first request goes to aiohttp; a later one is the wire's
        reader, writer = await connect(env)
        if not first:
            writer.write(request(env, echo_body()))
            status, _, _ = await response(reader)
            assert status == 200
        writer.write(request(env, echo_body(), extra=f"X-Long: {long}\r\n"))
        status, _, body = await response(reader)
        assert status == 400 and "error" in json.loads(body)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    assert env.sup.view("echo").leases == 0
