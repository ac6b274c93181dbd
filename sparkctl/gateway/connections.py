"""The gateway's listening sockets, guarded: a cap on open connections, and a deadline for a new
connection's request headers (#13: 300 idle unauthenticated sockets used to leave keyed clients
and the admin socket unanswered).

- Beyond `gateway.max_connections` a new TCP connection is aborted as it is accepted, before a
  byte is read or a buffer allocated; those already open keep working, and the local admin
  socket (unix) is never refused, so an operator can always get in.
- A connection that has not delivered a request's headers within `gateway.header_timeout` gets
  408 `request_timeout` and is closed (a slow-loris sends headers a byte at a time). Between
  requests on a kept-alive connection, the keep-alive timeout bounds it instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sparkctl.errors import BadRequestError, RequestTimeoutError, RequestTooLargeError
from sparkctl.gateway.errors import error_body


class Served(Protocol):
    """A connection this side parses (gateway/wire.py's Wire), as the guard sees it."""

    @property
    def idle(self) -> bool: ...

    @property
    def served(self) -> bool: ...

    @property
    def serving(self) -> bool: ...

    def close(self) -> None: ...


# Makes a connection's protocol that serves what it can and hands the rest to aiohttp's
# (`handoff(counted)` makes one): gateway/wire.py's `Wire`.
WireFactory = Callable[[Callable[[bool], asyncio.Protocol], "ConnectionGuard", bool], asyncio.Protocol]

log = logging.getLogger("sparkctl.gateway")
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle kept-alive connection stays open (nginx's default)
SWEEP = 1.0  # seconds between looks at the connections still owing their headers
FIRST_REQUEST_GRACE = 2.0  # seconds a connection accepted just before a stop gets to send its request
_TIMEOUT_BODY = error_body(RequestTimeoutError("The request headers did not arrive in time."))
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_TIMEOUT_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class _Refused(asyncio.Protocol):
    """A connection over the cap: reset at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class _Handler(RequestHandler):
    """aiohttp's handler, with two changes.

    - Counted by the guard (`counted`) from the moment it is made until its connection is lost.
      The guard cannot count `server.connections` instead: asyncio makes the protocols of a burst
      of accepts (a backlog that built up during a restart) before any of them is connected, so
      all of a burst would see the same count and all would be let in.
    - A request the HTTP parser refuses (a bad request line, a smuggling attempt, headers too
      long) is answered in the error envelope and noted in one line, not a traceback per request.
    """

    __slots__ = ("_counted", "_guard")

    def __init__(self, server: web.Server, guard: ConnectionGuard, *, counted: bool) -> None:
        # as web.Server() makes its handlers (its keyword arguments are the runner's)
        super().__init__(server, loop=asyncio.get_running_loop(), **server._kwargs)
        self._guard = guard
        self._counted = counted

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._guard.open -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a bug: keep its traceback
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun: no error response can follow")
        reason = (exc.message or "malformed HTTP request").splitlines()[0][:200]
        self._guard.malformed(request.remote, reason)
        error = RequestTooLargeError if status == 413 else BadRequestError
        response = web.Response(
            status=status,
            body=error_body(error(f"Malformed HTTP request: {reason}")),
            content_type="application/json",
        )
        response.force_close()
        return response


class ConnectionGuard:
    """Counts against the cap and watches new connections' headers. One per daemon, shared by
    its sites; a sweep once a `SWEEP` (a timer, while any site is up) closes the connections
    whose headers are late, so their deadline holds within that much."""

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.open = 0  # capped connections: made (accepted) and not yet lost
        self.refused = 0
        self.timed_out = 0
        self.rejected = 0  # requests the HTTP parser refused
        # connection (aiohttp's _Handler or a wire.Wire: both have `transport` and
        # `_request_count`) → when it was accepted
        self._waiting: dict[Any, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sites = 0
        self._wires: set[Served] = set()  # connections served off the wire (gateway/wire.py)
        self.stopping = False  # no site is left: connections end after their current answer

    def protocol(
        self, server: web.Server, *, capped: bool, wire: WireFactory | None = None
    ) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory for one listening socket (`capped`: counted against the cap).
        With `wire`, connections are parsed off the wire and the inference requests served
        there; the rest is handed on to aiohttp's protocol (gateway/wire.py)."""
        loop = asyncio.get_running_loop()

        def handoff(counted: bool) -> asyncio.Protocol:
            return _Handler(server, self, counted=counted)

        def accept() -> asyncio.BaseProtocol:
            # asyncio loses no connection it made a protocol for: every counted protocol made
            # here is connected, then lost, exactly once
            if capped and self.open >= self.max_connections:
                self._refuse()
                return _Refused()
            protocol: asyncio.Protocol
            if wire is not None:
                protocol = wire(handoff, self, capped)
            else:
                protocol = _Handler(server, self, counted=capped)
            if capped:
                self.open += 1
            self._waiting[protocol] = loop.time()
            return protocol

        return accept

    def track(self, wire: Served) -> None:
        self._wires.add(wire)

    def untrack(self, wire: Served) -> None:
        self._wires.discard(wire)
        self._waiting.pop(wire, None)

    def attach(self) -> None:
        self._sites += 1
        if self._sweeper is None:
            self._arm()

    def detach(self) -> None:
        self._sites -= 1
        if self._sites > 0:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
            self._waiting.clear()
        # As aiohttp's shutdown does with its own: connections between requests close now; one
        # that has not sent its first request yet gets a moment to (serve.py's _stop_accepting).
        self.stopping = True
        for wire in list(self._wires):
            if wire.idle and wire.served:
                wire.close()
        if self._wires:
            asyncio.get_running_loop().call_later(FIRST_REQUEST_GRACE, self._close_idle)

    @property
    def busy(self) -> bool:
        """Whether a connection served here is in the middle of a request."""
        return any(wire.serving for wire in self._wires)

    @property
    def unasked(self) -> bool:
        """Whether a connection served here has not sent its first request yet."""
        return any(not wire.served for wire in self._wires)

    def _close_idle(self) -> None:
        for wire in list(self._wires):
            if wire.idle:
                wire.close()

    def _arm(self) -> None:
        interval = min(SWEEP, self.header_timeout / 4)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        for handler, accepted in list(self._waiting.items()):
            # aiohttp counts the requests a connection has delivered (headers parsed) in an
            # attribute of its own; a version without it reads as "has one": nothing is closed.
            if handler.transport is None or getattr(handler, "_request_count", 1) > 0:
                del self._waiting[handler]  # gone, or its request came
            elif now - accepted >= self.header_timeout:
                del self._waiting[handler]
                self.timed_out += 1
                handler.transport.write(_TIMEOUT_RESPONSE)
                handler.transport.close()
        self._arm()

    def malformed(self, peer: str | None, reason: str) -> None:
        self.rejected += 1
        if _said(self.rejected):  # a scanner on the LAN sends many
            log.info("refused a malformed HTTP request from %s: %s (%d so far)", peer, reason, self.rejected)

    def _refuse(self) -> None:
        self.refused += 1
        if _said(self.refused):
            log.warning(
                "refused a connection: %d are open (gateway.max_connections); %d refused so far",
                self.max_connections,
                self.refused,
            )


def _said(count: int) -> bool:
    """Whether the `count`th of a kind of event goes to the journal: the 1st, 2nd, 4th, 8th …
    so that a flood is said, not spilled."""
    return count & (count - 1) == 0


class GuardedSite(web.SockSite):
    """A socket from systemd (or bound by hand), served through a ConnectionGuard."""

    __slots__ = ("_guard", "_wire")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        guard: ConnectionGuard,
        *,
        wire: WireFactory | None = None,
    ) -> None:
        super().__init__(runner, sock, backlog=1024)
        self._guard = guard
        self._wire = wire

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (SockSite.start would serve unguarded)
        server = self._runner.server
        assert server is not None, "the runner is set up before its sites start"
        capped = self._sock.family != socket.AF_UNIX  # the local admin socket: never refused
        # the local admin socket's callers are known by SO_PEERCRED, in aiohttp's path
        factory = self._guard.protocol(server, capped=capped, wire=self._wire if capped else None)
        self._server = await asyncio.get_running_loop().create_server(
            factory, sock=self._sock, backlog=self._backlog
        )
        self._guard.attach()

    async def stop(self) -> None:
        await super().stop()
        self._guard.detach()
