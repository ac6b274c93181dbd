"""The engines' side of the relay: warm kept-alive connections, one HTTP/1.1 exchange at a time on
each, on a bare asyncio protocol with httptools' C parser (#18).

aiohttp's client cost the gateway ~45 µs of Python per request (its request and response
objects, URL handling, the connector's bookkeeping, a timer per read) for what is, towards an
engine on loopback, always the same: one POST with a body of known length, one answer. Here a
request goes up as one pre-joined head and its body in one `writelines`; the answer's head is
parsed in C into a list of raw pairs, and its body is handed on as it arrives, with no task,
timeout or stream object of its own.

Connections are reused newest first, and never one idle longer than `IDLE`: uvicorn (vLLM) and
aiohttp (the emulator) close theirs after 5 s and 75 s, and a request written into a connection
the engine is closing would be lost. A reused connection that the engine closes before any byte
of the answer (that race, narrowed but not gone) is retried once on a fresh one: the engine read
none of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httptools

IDLE = 4.0  # seconds a connection may wait in the pool: under uvicorn's 5 s keep-alive
CONNECT_TIMEOUT = 10.0
HIGH_WATER = 256 * 1024  # answer bytes held for a slow client before the engine is paused


class EngineError(Exception):
    """The engine could not be reached, or its answer broke off or was not HTTP."""


class EngineConnection(asyncio.Protocol):
    """One connection to an engine, carrying one exchange at a time."""

    __slots__ = (
        "_chunks",
        "_done",
        "_error",
        "_head",
        "_held",
        "_loop",
        "_parser",
        "_paused",
        "_pool_key",
        "_received",
        "_sink",
        "_waiter",
        "early",
        "headers",
        "idle_since",
        "keep_alive",
        "pool",
        "status",
        "transport",
    )

    def __init__(self, pool: EnginePool, key: int) -> None:
        self.pool = pool
        self._pool_key = key
        # made by the pool on the running loop; kept, as asyncio.get_running_loop() costs a
        # getpid() syscall per call on Python 3.11
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self._chunks: list[bytes] = []
        self._held = 0
        self._head = False  # the answer's head is in
        self._done = False  # the answer is complete
        self._received = False  # a byte of the answer came
        self._error: EngineError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._sink: Callable[[bytes], bool] | None = None
        # called once the whole answer is in, from the protocol's callback: a caller may pass a
        # small answer on to its client there and then, a loop turn before its task wakes (#18)
        self.early: Callable[[EngineConnection], None] | None = None

    # ------------------------------------------------------------------ asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(EngineError("the engine answered with an upgrade"))
        except httptools.HttpParserError as e:
            self._fail(EngineError(f"the engine's answer is not valid HTTP: {e}"))
        if self._sink is not None and self._chunks:
            # What one read brought (many events, when the engine is fast) goes on in one write.
            chunks = self._chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._held = 0
            if not self._sink(data) and not self._paused and self.transport is not None:
                self._paused = True  # the client is full: `pump` drains it, then reading resumes
                self.transport.pause_reading()
                self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.forget(self._pool_key, self)
        if self._done:
            return
        if exc is None and self._head and self._close_delimited():
            # An answer with neither a length nor chunks ends with its connection (RFC 9112
            # §6.3); httptools is not told of the end, so it is noted here.
            self._done = True
            self._wake()
        else:
            self._fail(EngineError(str(exc) if exc else "the engine closed the connection"))

    def _close_delimited(self) -> bool:
        return self.header(b"content-length") is None and self.header(b"transfer-encoding") is None

    # ------------------------------------------------------------------ httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): not the one waited for.
            self.headers = []
            return
        self.status = status
        self._head = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not body:
            return
        self._chunks.append(body)
        self._held += len(body)
        if self._held > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # the end of an interim answer
        self.keep_alive = self._parser.should_keep_alive()
        self._done = True
        self._wake()
        if (early := self.early) is not None:
            self.early = None
            early(self)

    # ------------------------------------------------------------------ the exchange
    def _wake(self) -> None:
        if (waiter := self._waiter) is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: EngineError) -> None:
        if self._error is None:
            self._error = error
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self.transport.writelines((head, body))

    async def response(self) -> None:
        """Wait for the answer's status line and headers."""
        while not self._head:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The rest of the answer, whole."""
        while not self._done:
            if self._error is not None:
                raise self._error
            self._resume()
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def take(self) -> bytes:
        """The whole answer's body, once it has all come (`complete`), without waiting."""
        assert self._done
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def next_chunk(self) -> bytes:
        """What has arrived of the answer since the last call, at least a byte; b"" at its end.
        Chunks that came meanwhile are joined: one write to the client for all of them."""
        while not self._chunks:
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            self._resume()
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._held = 0
        return data

    async def pump(self, sink: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]) -> None:
        """Hand the rest of the answer to `sink` from the protocol's own callback as it arrives:
        no task step per chunk (one per chunk was most of a stream's relay cost, #18). `sink`
        returns False once the client's buffer is full; reading then pauses until `drain()` has
        emptied it. Returns at the answer's end; raises EngineError if it breaks off."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._held = 0
            if not sink(data):
                self._paused = True
        self._sink = sink
        try:
            while not self._done:
                if self._error is not None:
                    raise self._error
                if self._paused:
                    await drain()
                    self._resume()
                    continue
                await self._wait()
        finally:
            self._sink = None

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self._held = 0
            self.transport.resume_reading()

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def untouched(self) -> bool:
        """Closed before any byte of the answer came."""
        return self._error is not None and not self._received

    def header(self, name: bytes) -> bytes | None:
        """A header of the answer (`name` in lower case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def finish(self) -> None:
        """The exchange is over: back to the pool when it ended cleanly, else closed."""
        if self._done and self.keep_alive and self._error is None and self.transport is not None:
            self._reset()
            self.pool.put(self._pool_key, self)
        else:
            self.abort()

    def abort(self) -> None:
        self._fail(EngineError("the exchange was abandoned"))
        if self.transport is not None:
            self.transport.abort()


class EnginePool:
    """Idle connections per engine port; a request takes the newest or opens one."""

    def __init__(self) -> None:
        self._idle: dict[int, list[EngineConnection]] = {}
        self._closed = False

    def put(self, port: int, conn: EngineConnection) -> None:
        if self._closed:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(port, []).append(conn)

    def forget(self, port: int, conn: EngineConnection) -> None:
        idle = self._idle.get(port)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def idle(self, port: int) -> int:
        """How many connections to the engine on `port` wait in the pool."""
        return len(self._idle.get(port, ()))

    def _take(self, port: int) -> EngineConnection | None:
        idle = self._idle.get(port)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < IDLE and conn.transport is not None:
                return conn
            conn.abort()
        return None

    async def _open(self, port: int) -> EngineConnection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], EngineConnection] = lambda: EngineConnection(self, port)  # noqa: E731
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, conn = await loop.create_connection(factory, "127.0.0.1", port)
        except (OSError, TimeoutError) as e:
            raise EngineError(f"cannot connect to 127.0.0.1:{port}: {e or type(e).__name__}") from None
        return conn

    async def exchange(
        self,
        port: int,
        head: bytes,
        body: bytes,
        early: Callable[[EngineConnection], None] | None = None,
    ) -> EngineConnection:
        """Send one request; return its connection once the answer's head has come. The caller
        reads the body from it and then calls `finish()` (or `abort()`), in a `finally`.
        `early(conn)`, if given, is called as soon as the whole answer is in (`EngineConnection.early`)."""
        conn = self._take(port)
        if conn is not None:
            conn.early = early
            conn.send(head, body)
            try:
                await conn.response()
                return conn
            except EngineError:
                if not conn.untouched:
                    raise
            except BaseException:
                conn.abort()
                raise
            # the engine closed a kept-alive connection under the request: once more, fresh
        conn = await self._open(port)
        conn.early = early
        conn.send(head, body)
        try:
            await conn.response()
        except BaseException:
            conn.abort()
            raise
        return conn

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in list(idle):
                conn.abort()
        self._idle.clear()
