"""A client connection on the gateway's TCP ports, parsed with httptools (llhttp, in C), so that
the proxied inference requests skip aiohttp's server (#18).

aiohttp's server cost ~30 µs of Python per request (a task per request, its request and response
objects, the router and three middlewares) on a path that, for an inference request, always does
the same: one POST with a JSON body of known length, relayed to an engine. This protocol parses
every request on the connection itself and serves the ones that qualify (`Express.eligible`: a
model route, a key, a Content-Length body, nothing to negotiate) through `gateway/express.py`.
Anything else goes to aiohttp, which serves it exactly as before:

- the connection's first request, undecided: its raw bytes go to aiohttp's protocol, which then
  owns the connection (`transport.set_protocol`): the admin API, the dashboard, `/metrics`,
  malformed first requests, all parsed by aiohttp as they came;
- a later one, after requests served here: from it on, every request of the connection is written
  out again as parsed (request line, the headers as they came, the body; a chunked one re-framed)
  and fed to an aiohttp protocol attached once the responses before it have gone out. llhttp has
  already refused what could smuggle (CL with TE, two lengths, a TE not ending in chunked).

What this side keeps of aiohttp's server: the connection cap and the header deadline
(`ConnectionGuard` counts and sweeps it, `transport` and `_request_count` as aiohttp's), a limit
on a request head's size, pipelining (requests queue and are answered in order), keep-alive with
`KEEPALIVE_TIMEOUT`, a malformed request answered 400 in the envelope and the connection closed,
a body that does not come within `gateway.body_timeout` answered 408, and a client that hangs up
cancelling its request, as `handler_cancellation` does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import httptools

from sparkctl.errors import BadRequestError, RequestTimeoutError, RequestTooLargeError, SparkError
from sparkctl.gateway.connections import KEEPALIVE_TIMEOUT, ConnectionGuard, WireFactory
from sparkctl.gateway.errors import error_body, retry_after

if TYPE_CHECKING:
    from sparkctl.apikeys import KeyEntry, KeyStore

log = logging.getLogger("sparkctl.gateway")
MAX_HEAD = 64 * 1024  # bytes of one request's line and headers (aiohttp: 16 KiB per line or field)
MAX_FIELD = 16384  # bytes of the URL or of one header, as serve.py sets aiohttp's max_line/field_size
MAX_HEADERS = 128  # aiohttp's own limit
MAX_QUEUED = 16  # pipelined requests waiting their turn before reading pauses
Headers = list[tuple[bytes, bytes]]


class WireRequest:
    """One request as parsed: raw line parts and headers, the body (whole once it is queued)."""

    __slots__ = (
        "body",
        "caller",
        "chunked",
        "express",
        "headed",
        "headers",
        "keep_alive",
        "length",
        "method",
        "picked",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.method = b""
        self.body: list[bytes] = []
        self.length = -1  # Content-Length, -1 without one
        self.chunked = False
        self.headed = False
        self.keep_alive = True
        self.express = False  # served here (else aiohttp's)
        self.caller: tuple[KeyStore, KeyEntry] | None = None  # the key it presented, as checked
        self.picked: dict[bytes, bytes] = {}  # lower-case name → its first value, made as they come

    def header(self, name: bytes) -> bytes | None:
        """A header's value (`name` in lower case); the first, if repeated."""
        return self.picked.get(name)


class Express(Protocol):
    """What serves the requests this side keeps (gateway/express.py)."""

    @property
    def body_timeout(self) -> float: ...

    def eligible(self, request: WireRequest, wire: Wire) -> bool: ...

    def serve(self, request: WireRequest, wire: Wire) -> Awaitable[bool]:
        """Serve it; False: aiohttp's to serve, as it came (its body kept)."""
        ...


class _Failure:
    """A request refused before it was whole (malformed, late body): answered in its turn."""

    __slots__ = ("error",)

    def __init__(self, error: SparkError) -> None:
        self.error = error


class Wire(asyncio.Protocol):
    """One client connection: parses, serves or hands on, answers in order."""

    __slots__ = (
        "_aio",
        "_body_timer",
        "_broken",
        "_busy",
        "_closing",
        "_counted",
        "_drained",
        "_express",
        "_guard",
        "_handoff",
        "_handoff_now",
        "_head_bytes",
        "_idle",
        "_keep",
        "_keepalive",
        "_last",
        "_loop",
        "_parser",
        "_paused",
        "_pending",
        "_queue",
        "_raw",
        "_req",
        "_request_count",
        "_translating",
        "_worker",
        "peer",
        "sockport",
        "transport",
    )

    def __init__(
        self,
        express: Express,
        handoff: Callable[[bool], asyncio.Protocol],
        guard: ConnectionGuard,
        *,
        counted: bool,
    ) -> None:
        self._express = express
        self._handoff = handoff  # an aiohttp protocol for this connection (counted or not)
        self._guard = guard
        self._counted = counted
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.sockport: int | None = None
        self._raw: bytearray | None = bytearray()  # the bytes so far, until the first head decides
        self._req: WireRequest | None = None  # being parsed
        self._queue: collections.deque[WireRequest | _Failure] = collections.deque()
        self._request_count = 0  # heads received (ConnectionGuard's sweep reads it, as aiohttp's)
        self._head_bytes = 0
        self._handoff_now = False  # the first request goes to aiohttp as it came
        self._translating = False  # from the current request on, aiohttp serves (re-serialized)
        self._aio: asyncio.Protocol | None = None  # aiohttp's protocol, once attached
        self._pending = bytearray()  # re-serialized bytes for it, until it is attached
        self._broken = False  # nothing more is parsed: the connection ends after its answers
        self._busy = False  # a request is being served
        self._keep = True  # the connection goes on after the current answer
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._paused = False  # the client reads slower than we write
        self._drained: asyncio.Future[None] | None = None
        self._closing = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._last = 0.0

    # ------------------------------------------------------------------ asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else None
        sockname = transport.get_extra_info("sockname")
        self.sockport = int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it only on sockets made with proto IPPROTO_TCP, which systemd's (and
            # any bound with proto 0) are not; aiohttp sets it itself. Without it, an event
            # written after a stream's head waited for the client's delayed ACK: 40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._guard.track(self)

    def data_received(self, data: bytes) -> None:
        if self._broken or self._closing:
            return
        if self._raw is not None:
            self._raw += data
        req = self._req
        if req is not None and not req.headed:
            # a head still coming, read after read: bounded (a read that begins a message is
            # not counted, so pipelined requests in one read are never taken for one head)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                if self._raw is not None:
                    self._hand_off()  # aiohttp refuses it, as before
                else:
                    self._refuse(RequestTooLargeError("Malformed HTTP request: its head is too large."))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade is never served here: its head has gone to aiohttp (below)
        except httptools.HttpParserError as e:
            if self._raw is not None:
                self._handoff_now = True  # aiohttp refuses it, in the envelope, as before
            elif not self._handoff_now:
                reason = (str(e) or "malformed HTTP request").splitlines()[0][:200]
                self._guard.malformed(self.peer, reason)
                self._refuse(BadRequestError(f"Malformed HTTP request: {reason}"))
                return
        if self._handoff_now:
            self._hand_off()
            return
        req = self._req
        if req is not None and req.express and self._body_timer is None:
            # the body of a request served here is on its way: it has body_timeout to come
            timeout = self._express.body_timeout
            self._body_timer = self._loop.call_later(timeout, self._body_late, timeout)

    def eof_received(self) -> bool | None:
        if self._aio is not None:
            return self._aio.eof_received()
        return None  # the transport closes; a request in progress is cancelled (connection_lost)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._closing = True
        if self._counted:
            self._guard.open -= 1
        self._guard.untrack(self)
        for timer in (self._body_timer, self._keepalive):
            if timer is not None:
                timer.cancel()
        if self._worker is not None:
            self._worker.cancel()  # a request in progress ends: its lease and engine connection go
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the client went away"))
        if self._aio is not None:
            self._aio.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        if self._aio is not None:
            self._aio.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if (waiter := self._drained) is not None and not waiter.done():
            waiter.set_result(None)
        if self._aio is not None:
            self._aio.resume_writing()

    # ------------------------------------------------------------------ httptools' callbacks
    def on_message_begin(self) -> None:
        self._req = WireRequest()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        assert self._req is not None
        self._req.url += url
        if len(self._req.url) > MAX_FIELD:
            raise httptools.HttpParserError(f"the URL is longer than {MAX_FIELD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._req is not None
        headers = self._req.headers
        if len(headers) >= MAX_HEADERS:
            raise httptools.HttpParserError("too many headers")
        if len(name) > MAX_FIELD or len(value) > MAX_FIELD:
            raise httptools.HttpParserError(f"a header is longer than {MAX_FIELD} bytes")
        headers.append((name, value))
        self._req.picked.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        if self._handoff_now:
            return
        self._request_count += 1
        req.headed = True
        parser = self._parser
        req.method = parser.get_method()
        req.keep_alive = parser.should_keep_alive()
        picked = req.picked
        if (length := picked.get(b"content-length")) is not None:
            req.length = int(length) if length.strip().isdigit() else -1  # (llhttp refuses two)
        if b"transfer-encoding" in picked:
            req.chunked = True  # llhttp has checked that it ends in chunked
        if not self._translating:
            express = (
                not parser.should_upgrade()
                and parser.get_http_version() == "1.1"
                and self._express.eligible(req, self)
            )
            if self._raw is not None:
                if not express:
                    self._handoff_now = True  # after this read: aiohttp parses it from its first byte
                    return
                self._raw = None
            req.express = express
            self._translating = not express
        if self._translating:
            self._translate_head(req)

    def on_body(self, body: bytes) -> None:
        req = self._req
        if self._handoff_now or req is None:
            return
        if req.express:
            req.body.append(body)
        elif req.chunked:
            self._feed(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self._feed(body)

    def on_message_complete(self) -> None:
        req = self._req
        if self._handoff_now or req is None:
            return
        self._req = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if not req.express:
            if req.chunked:
                self._feed(b"0\r\n\r\n")
            return
        self._queue.append(req)
        if len(self._queue) > MAX_QUEUED and self.transport is not None:
            self.transport.pause_reading()  # resumed as the queue drains
        self._wake()

    # ------------------------------------------------------------------ aiohttp's side
    def _hand_off(self, given: bytes | None = None) -> None:
        """The first request is aiohttp's: it gets the connection and every byte so far (or
        `given`, what was parsed written out again, at a message's end)."""
        transport, raw = self.transport, self._raw if given is None else given
        assert transport is not None and raw is not None
        self._guard.untrack(self)
        protocol = self._handoff(self._counted)  # it counts the connection from here on
        self._counted = False
        self._closing = True
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(bytes(raw))
        self._raw = None

    def _translate_head(self, req: WireRequest) -> None:
        self._feed(self._head_of(req))

    def _head_of(self, req: WireRequest) -> bytes:
        """A request's line and headers, written out again as they came."""
        parts = [req.method, b" ", req.url, b" HTTP/", self._parser.get_http_version().encode(), b"\r\n"]
        for name, value in req.headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _feed(self, data: bytes) -> None:
        if self._aio is not None:
            self._aio.data_received(data)
            return
        self._pending += data
        self._attach()

    def _give_back(self, req: WireRequest) -> None:
        """`req` is aiohttp's after all (another node's model): it, the requests queued behind it
        and the one arriving go to aiohttp as they were parsed, and so does every later one; it
        takes the connection once the answers before are out (`_attach`)."""
        translating, self._translating = self._translating, True
        ahead = bytearray()
        for item in (req, *self._queue):
            if isinstance(item, _Failure):
                # a malformed request behind it: no clean way to answer it after aiohttp's
                if self.transport is not None:
                    self.transport.abort()
                return
            ahead += self._head_of(item)
            ahead += b"".join(item.body)
        self._queue.clear()
        if not translating and self._req is None and not self._pending and self.transport is not None:
            # at a message's end (as a client that waits for each answer always is): aiohttp
            # takes the connection itself, and parses what comes next as it comes
            self._hand_off(bytes(ahead))
            return
        # what was translated already came after them (a request aiohttp's from the start)
        self._pending[:0] = ahead
        arriving = self._req
        if not translating and arriving is not None and arriving.headed and arriving.express:
            self._translate_head(arriving)  # its body so far, then the rest as it comes
            self._feed(b"".join(arriving.body))
            arriving.body = []
            arriving.express = False
            if self._body_timer is not None:
                self._body_timer.cancel()  # aiohttp keeps its own
                self._body_timer = None

    def _attach(self) -> None:
        """aiohttp's protocol takes over the connection once the answers before are out."""
        if self._aio is not None or not self._pending or self._busy or self._queue or self.transport is None:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()  # aiohttp keeps its own
            self._keepalive = None
        self._aio = self._handoff(False)  # still counted here: this protocol sees connection_lost
        self._aio.connection_made(self.transport)
        pending, self._pending = bytes(self._pending), bytearray()
        self._aio.data_received(pending)

    # ------------------------------------------------------------------ answering in order
    def _wake(self) -> None:
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())
        elif (idle := self._idle) is not None and not idle.done():
            idle.set_result(None)

    async def _work(self) -> None:
        queue = self._queue
        while True:
            while not queue:
                self._attach()
                self._idle = self._loop.create_future()
                try:
                    await self._idle
                finally:
                    self._idle = None
            item = queue.popleft()
            if len(queue) == MAX_QUEUED and self.transport is not None and not self._broken:
                self.transport.resume_reading()
            self._busy = True
            try:
                if isinstance(item, _Failure):
                    self.respond_error(item.error, close=True)
                else:
                    self._keep = item.keep_alive
                    if not await self._express.serve(item, self):
                        self._give_back(item)
                    elif not self._keep or self._guard.stopping:
                        self.close()
            except Exception:
                log.exception("a request failed unanswered; its connection is closed")
                if self.transport is not None:
                    self.transport.abort()
                return
            finally:
                self._busy = False
            if self._closing:
                return
            self._idle_since()

    def _idle_since(self) -> None:
        self._last = self._loop.time()
        if self._keepalive is None and self._aio is None:
            self._keepalive = self._loop.call_at(self._last + KEEPALIVE_TIMEOUT, self._keepalive_check)

    def _keepalive_check(self) -> None:
        self._keepalive = None
        if self._closing or self._aio is not None:
            return
        due = self._last + KEEPALIVE_TIMEOUT
        # a head still coming does not keep the connection (as aiohttp's: a slow head is no
        # activity); a body does, within body_timeout
        arriving = self._req is not None and self._req.headed
        if self._busy or self._queue or arriving or self._loop.time() < due:
            self._keepalive = self._loop.call_at(max(due, self._loop.time() + 1), self._keepalive_check)
        else:
            self.close()

    @property
    def served(self) -> bool:
        return self._request_count > 0

    @property
    def serving(self) -> bool:
        """A request of its own is in progress, queued or arriving."""
        return self._busy or bool(self._queue) or self._req is not None

    @property
    def idle(self) -> bool:
        """Between requests: none in progress, queued or arriving (shutdown closes these)."""
        return not self._busy and not self._queue and self._req is None and self._aio is None

    def _refuse(self, error: SparkError) -> None:
        """Nothing more is read; the answers before go out, then this error, then the end."""
        self._broken = True
        self._req = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._aio is not None or self._pending:
            if self.transport is not None:
                self.transport.abort()  # aiohttp is mid-answer on it: no clean way to add ours
            return
        if self.transport is not None:
            self.transport.pause_reading()
        self._queue.append(_Failure(error))
        self._wake()

    def _body_late(self, timeout: float) -> None:
        self._body_timer = None
        self._refuse(RequestTimeoutError(f"The request body did not arrive within {timeout:g}s."))

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    @property
    def gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def full(self) -> bool:
        return self._paused

    async def drain(self) -> None:
        """Until the client has taken what was written (ConnectionResetError if it went away)."""
        if self.transport is None:
            raise ConnectionResetError("the client went away")
        if not self._paused:
            return
        waiter = self._drained = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drained = None

    def head(self, status: int, headers: Headers, length: int | None) -> bytes:
        """A response's status line and headers; `length` None: chunked."""
        parts = [_STATUS.get(status) or _status_line(status), _date()]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(_CHUNKED if length is None else b"Content-Length: %d\r\n" % length)
        if not self._keep or self._guard.stopping:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self.write(self.head(status, headers, len(body)) + body)

    def respond_error(self, error: SparkError, *, request_id: str | None = None, close: bool = False) -> None:
        headers: Headers = [(b"Content-Type", b"application/json")]
        if request_id is not None:
            headers.append((b"X-Request-Id", request_id.encode()))
        if (ra := retry_after(error)) is not None:
            headers.append((b"Retry-After", ra.encode()))
        if error.code.status == 401:
            headers.append((b"WWW-Authenticate", b'Bearer realm="sparkctl"'))
        if close:
            self._keep = False
        self.respond(error.code.status, headers, error_body(error))
        if close:
            self.close()

    def close(self) -> None:
        """End the connection once what was written has gone."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()


def wire_factory(express: Express) -> WireFactory:
    """The protocol factory a GuardedSite takes (`wire=`) to serve `express`'s requests here."""

    def make(handoff: Callable[[bool], asyncio.Protocol], guard: ConnectionGuard, counted: bool) -> Wire:
        return Wire(express, handoff, guard, counted=counted)

    return make


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_STATUS = {s.value: _status_line(s.value) for s in HTTPStatus}
_clock: list[float | bytes] = [0.0, b""]


def _date() -> bytes:
    """The Date header (RFC 9110 §6.6.1), made once a second."""
    now = int(time.time())
    if now != _clock[0]:
        _clock[0] = now
        _clock[1] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    value = _clock[1]
    assert isinstance(value, bytes)
    return value
