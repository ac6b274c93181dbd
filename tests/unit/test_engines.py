"""The relay's client side (gateway/engines.py) against a scripted engine on loopback: what it
sends, how it reads each shape of answer, when a connection goes back to the pool, and the one
retry of a kept-alive connection that the engine closed under a request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from sparkctl.gateway import engines
from sparkctl.gateway.engines import EngineError, EnginePool

CLOSE = b""  # the last of a script's writes: then the engine closes the connection
Script = Callable[[bytes, int], list[bytes] | None]  # (request, connection number) → writes; None: close


class Engine:
    """Answers each request (read whole: its head and Content-Length bytes) with what `script`
    says; records the requests and counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                writes = self.script(request, number)
                if writes is None:
                    break
                for w in writes:
                    writer.write(w)
                    await writer.drain()
                    await asyncio.sleep(0)
                if writes and writes[-1] == CLOSE:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def pool() -> AsyncIterator[EnginePool]:
    p = EnginePool()
    yield p
    p.close()


async def serve(script: Script) -> Engine:
    engine = Engine(script)
    engine.server = await asyncio.start_server(engine.handle, "127.0.0.1", 0)
    engine.port = engine.server.sockets[0].getsockname()[1]
    return engine


def ok(body: bytes = b'{"ok":true}') -> list[bytes]:
    return [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    ]


async def stop(engine: Engine) -> None:
    assert engine.server is not None
    engine.server.close()
    await engine.server.wait_closed()


async def test_one_connection_carries_request_after_request(pool: EnginePool) -> None:
    engine = await serve(lambda req, n: ok())
    for i in range(3):
        conn = await pool.exchange(engine.port, b"POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n", b"{}")
        assert conn.status == 200 and conn.header(b"content-type") == b"application/json"
        assert await conn.read() == b'{"ok":true}'
        conn.finish()
        assert pool.idle(engine.port) == 1, i
    assert engine.connections == 1
    assert engine.requests[0].endswith(b"\r\n\r\n{}")
    await stop(engine)


async def test_an_engine_error_answer_read_whole_keeps_the_connection(pool: EnginePool) -> None:
    err = b'{"error":{"message":"bad"}}'
    answers = iter([[b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(err), err)], ok()])
    engine = await serve(lambda req, n: next(answers))
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    assert conn.status == 400 and await conn.read() == err
    conn.finish()
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    assert conn.status == 200
    await conn.read()
    conn.finish()
    assert engine.connections == 1
    await stop(engine)


async def test_chunked_and_close_delimited_answers_come_in_pieces(pool: EnginePool) -> None:
    chunked = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"7\r\ndata: 1\r\n",
        b"7\r\ndata: 2\r\n",
        b"0\r\n\r\n",
    ]
    closed = [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"abc", b"def", CLOSE]
    answers = iter([chunked, closed])
    engine = await serve(lambda req, n: next(answers, None))
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    got = b""
    while chunk := await conn.next_chunk():
        got += chunk
    assert got == b"data: 1data: 2" and conn.complete
    conn.finish()
    assert pool.idle(engine.port) == 1
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    got = b""
    while chunk := await conn.next_chunk():
        got += chunk
    assert got == b"abcdef"
    conn.finish()
    assert pool.idle(engine.port) == 0  # the engine said close
    await stop(engine)


async def test_an_interim_100_continue_is_skipped(pool: EnginePool) -> None:
    engine = await serve(lambda req, n: [b"HTTP/1.1 100 Continue\r\n\r\n", *ok(b"{}")])
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    assert conn.status == 200 and await conn.read() == b"{}"
    conn.finish()
    await stop(engine)


async def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_fresh(pool: EnginePool) -> None:
    # The first connection answers once, then closes without a byte when asked again (an
    # engine's keep-alive timeout racing the next request); the second answers.
    engine = await serve(lambda req, n: ok() if n > 1 or len(engine.requests) == 1 else None)
    for _ in range(2):
        conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
        assert conn.status == 200
        await conn.read()
        conn.finish()
    assert engine.connections == 2 and len(engine.requests) == 3
    await stop(engine)


async def test_a_fresh_connection_that_fails_is_not_retried(pool: EnginePool) -> None:
    engine = await serve(lambda req, n: None)
    with pytest.raises(EngineError):
        await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    assert len(engine.requests) == 1
    await stop(engine)


async def test_an_answer_cut_short_raises_and_is_not_pooled(pool: EnginePool) -> None:
    engine = await serve(lambda req, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE])
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    await stop(engine)
    assert await conn.next_chunk() == b"abc"
    with pytest.raises(EngineError):
        while await conn.next_chunk():
            pass
    conn.finish()
    assert pool.idle(engine.port) == 0


async def test_no_engine_listening_is_an_engine_error(pool: EnginePool) -> None:
    engine = await serve(lambda req, n: ok())
    port = engine.port
    await stop(engine)
    with pytest.raises(EngineError, match="cannot connect"):
        await pool.exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")


async def test_abandoning_an_exchange_closes_its_connection(pool: EnginePool) -> None:
    engine = await serve(
        lambda req, n: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n"]
    )
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    assert await conn.next_chunk() == b"abc"
    conn.abort()  # a client that hung up, a lease aborted
    with pytest.raises(EngineError):
        await conn.next_chunk()
    conn.finish()
    assert pool.idle(engine.port) == 0
    await stop(engine)


async def test_an_idle_connection_past_its_time_is_not_reused(
    pool: EnginePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await serve(lambda req, n: ok())
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    await conn.read()
    conn.finish()
    monkeypatch.setattr(engines, "IDLE", 0.0)
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    await conn.read()
    conn.finish()
    assert engine.connections == 2
    await stop(engine)


async def test_pump_hands_every_chunk_to_the_sink_in_order_with_backpressure(pool: EnginePool) -> None:
    events = [b"data: %d\n\n" % i for i in range(50)]
    framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    engine = await serve(
        lambda req, n: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *framed, b"0\r\n\r\n"]
    )
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    got: list[bytes] = []
    drains = 0

    def sink(chunk: bytes) -> bool:
        got.append(chunk)
        return len(got) % 2 != 0  # "full" every other write

    async def drain() -> None:
        nonlocal drains
        drains += 1
        await asyncio.sleep(0)

    await conn.pump(sink, drain)
    assert b"".join(got) == b"".join(events) and drains > 0 and conn.complete
    conn.finish()
    assert pool.idle(engine.port) == 1  # read to its end: kept
    await stop(engine)


async def test_pump_raises_when_the_answer_breaks_off(pool: EnginePool) -> None:
    engine = await serve(
        lambda req, n: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n", CLOSE]
    )
    conn = await pool.exchange(engine.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"")
    got: list[bytes] = []

    async def drain() -> None:
        raise AssertionError("never full")

    def sink(chunk: bytes) -> bool:
        got.append(chunk)
        return True

    with pytest.raises(EngineError):
        await conn.pump(sink, drain)
    assert got == [b"abc"]
    conn.finish()
    assert pool.idle(engine.port) == 0
    await stop(engine)
