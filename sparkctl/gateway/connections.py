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

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sparkctl.errors import BadRequestError, RequestTimeoutError, RequestTooLargeError
from sparkctl.gateway.errors import error_body

log = logging.getLogger("sparkctl.gateway")
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle kept-alive connection stays open (nginx's default)
SWEEP = 1.0  # seconds between looks at the connections still owing their headers
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
        self._waiting: dict[RequestHandler, float] = {}  # connection → when it was accepted
        self._sweeper: asyncio.TimerHandle | None = None
        self._sites = 0

    def protocol(self, server: web.Server, *, capped: bool) -> Callable[[], asyncio.BaseProtocol]:
        """The protocol factory for one listening socket (`capped`: counted against the cap)."""
        loop = asyncio.get_running_loop()

        def accept() -> asyncio.BaseProtocol:
            # asyncio loses no connection it made a protocol for: every counted _Handler made
            # here is connected, then lost, exactly once
            if capped and self.open >= self.max_connections:
                self._refuse()
                return _Refused()
            handler = _Handler(server, self, counted=capped)
            if capped:
                self.open += 1
            self._waiting[handler] = loop.time()
            return handler

        return accept

    def attach(self) -> None:
        self._sites += 1
        if self._sweeper is None:
            self._arm()

    def detach(self) -> None:
        self._sites -= 1
        if self._sites <= 0 and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
            self._waiting.clear()

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

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard) -> None:
        super().__init__(runner, sock, backlog=1024)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site (SockSite.start would serve unguarded)
        server = self._runner.server
        assert server is not None, "the runner is set up before its sites start"
        capped = self._sock.family != socket.AF_UNIX  # the local admin socket: never refused
        factory = self._guard.protocol(server, capped=capped)
        self._server = await asyncio.get_running_loop().create_server(
            factory, sock=self._sock, backlog=self._backlog
        )
        self._guard.attach()

    async def stop(self) -> None:
        await super().stop()
        self._guard.detach()
