"""The connection guard on a real listening socket, in-process: the cap holds for a burst of
accepts (a backlog built up while the daemon restarted), freed room is reused at once, and the
header deadline answers 408."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from sparkctl.gateway.connections import ConnectionGuard, GuardedSite
from sparkctl.gateway.wire import Wire, WireRequest, wire_factory

CAP = 10


@dataclass
class Listening:
    sock: socket.socket
    port: int
    runner: web.AppRunner
    guard: ConnectionGuard

    async def start(self) -> None:
        await GuardedSite(self.runner, self.sock, self.guard).start()


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def listening() -> AsyncIterator[Listening]:
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    guard = ConnectionGuard(max_connections=CAP, header_timeout=0.4)
    try:
        yield Listening(sock, sock.getsockname()[1], runner, guard)
    finally:
        await runner.cleanup()
        sock.close()


async def _connect(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]


async def _state(reader: asyncio.StreamReader) -> bytes | None:
    """What the server sent before closing, or None while the connection stays open."""
    try:
        return await asyncio.wait_for(reader.read(), 0.2)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


async def _settle(listening: Listening, expected_open: int) -> None:
    for _ in range(100):
        if listening.guard.open == expected_open:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{listening.guard.open} open, expected {expected_open}")


def _close(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in conns:
        writer.close()


async def test_a_burst_from_the_backlog_is_capped(listening: Listening) -> None:
    conns = await _connect(listening.port, CAP + 15)  # queued before anything accepts them
    try:
        await listening.start()
        await _settle(listening, CAP)
        states = await asyncio.gather(*(_state(r) for r, _ in conns))
        assert states.count(b"") == 15 and listening.guard.refused == 15, states
        assert states.count(None) == CAP
    finally:
        _close(conns)


async def test_room_freed_by_a_closed_connection_is_given_to_the_next(listening: Listening) -> None:
    await listening.start()
    conns = await _connect(listening.port, CAP)
    try:
        await _settle(listening, CAP)
        _close(conns[:3])
        await _settle(listening, CAP - 3)
        more = await _connect(listening.port, 4)
        conns += more
        await _settle(listening, CAP)
        states = await asyncio.gather(*(_state(r) for r, _ in more))
        assert states == [None, None, None, b""]
        reader, writer = more[0]
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
    finally:
        _close(conns)


async def test_headers_late_get_408_and_free_their_place(listening: Listening) -> None:
    await listening.start()
    conns = await _connect(listening.port, 2)
    try:
        answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 5) for r, _ in conns))
        assert all(a.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in a for a in answers)
        assert listening.guard.timed_out == 2
        await _settle(listening, 0)
    finally:
        _close(conns)


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",  # smuggling
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS spoken to a plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",  # a header too long
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=["smuggling", "tls", "long-header", "nul"])
async def test_a_request_the_parser_refuses_gets_the_envelope_and_one_log_line(
    listening: Listening, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sparkctl.gateway")
    await listening.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listening.port)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] in (b"400", b"413", b"431"), answer[:200]
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] in ("bad_request", "request_too_large") and error["message"].startswith("Malformed")
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's malformed request"
    assert [r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert listening.guard.rejected == 1


class _NoExpress:
    """Serves nothing off the wire: every request goes on to aiohttp."""

    body_timeout = 1.0

    def eligible(self, request: WireRequest, wire: Wire) -> bool:
        return False

    async def serve(self, request: WireRequest, wire: Wire) -> bool:
        raise AssertionError("nothing is eligible")


async def test_wire_connections_send_at_once_and_hand_aiohttp_the_rest_still_counted(
    listening: Listening,
) -> None:
    site = GuardedSite(listening.runner, listening.sock, listening.guard, wire=wire_factory(_NoExpress()))
    await site.start()
    conns = await _connect(listening.port, 3)
    await _settle(listening, 3)
    wires = list(listening.guard._wires)
    assert len(wires) == 3
    for wire in wires:
        # a socket bound with proto 0 (as systemd's): asyncio leaves Nagle on, the wire does not
        assert isinstance(wire, Wire) and wire.transport is not None
        sock = wire.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for reader, writer in conns:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(5) == b"hello"
    assert not listening.guard._wires  # aiohttp's now, and counted by it
    assert listening.guard.open == 3
    _close(conns)
    await _settle(listening, 0)
