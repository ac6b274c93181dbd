"""The inference requests served straight off the wire (gateway/wire.py), without aiohttp's
server (#18): the same steps as proxy.py's route and forward.py's relay — the key before anything
is scheduled (checked with the head, before the body is read), the body budget, routing, shaping,
the lease held for exactly as long as the answer lasts, keep-alive comments to a stream that waits
for its model, the engine's answer relayed with backpressure both ways, metrics and the access
line — written against the connection instead of aiohttp's request and response objects.

Only what needs nothing else is served here (`eligible`); the rest, and every deployment with
`auth = "none"`, takes aiohttp's path, where CORS, cookies, gzip and multipart bodies, `Expect`
and chunked bodies live. So does the relay to other nodes: in a cluster, a request whose model
this node does not serve itself is handed, once its body has said which model it wants, to
aiohttp's path with the rest of its connection (`serve` answers False).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sparkctl.apikeys import presented_key
from sparkctl.catalog import Model
from sparkctl.core.lease import Lease
from sparkctl.errors import SparkError, UnauthorizedError, UnknownModelError, UpstreamError
from sparkctl.gateway.context import Gateway
from sparkctl.gateway.engines import EngineConnection, EngineError
from sparkctl.gateway.errors import sse_error_event
from sparkctl.gateway.forward import BUFFER_LIMIT
from sparkctl.gateway.holds import Hold
from sparkctl.gateway.peers import RELAYED
from sparkctl.gateway.routing import MODEL_ROUTES, check_route, parse_body, resolve
from sparkctl.gateway.upstream import _NOT_DOWN, engine_error, request_head
from sparkctl.gateway.waiting import (
    CLIENT_CLOSED,
    KEEPALIVE_AFTER,
    KEEPALIVE_EVERY,
    acquire_within,
    prefers_no_wait,
    prepared,
    request_id,
    wait_bound,
    waited_too_long,
    waiting_comment,
)
from sparkctl.gateway.wire import Headers, Wire, WireRequest

log = logging.getLogger("sparkctl.gateway")
ROUTES = frozenset(r.encode() for r in MODEL_ROUTES)
SSE = b"text/event-stream"
_RELAYED = RELAYED.lower().encode()
_NOT_HERE = frozenset((b"expect", b"content-encoding", b"upgrade"))  # aiohttp's path handles these
_SSE_HEAD: Headers = [
    (b"Content-Type", SSE),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
_JSON = (b"Content-Type", b"application/json")


class _Answer:
    """How far the client's response has gone: `started` once its head is out (an event stream's,
    while the model loads), after which errors can only be events."""

    __slots__ = ("request_id", "sent", "started", "status")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.status = 500  # what the client was answered, when a failure answered it
        self.started = False
        self.sent = False  # all of it, from the engine's callback (`_early`)


class ExpressLane:
    """Serves the requests that need nothing of aiohttp's (wire.Express)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        limits = gw.settings.gateway
        self.max_body = limits.max_body
        self._body_timeout = limits.body_timeout
        self._cors = bool(limits.cors_origins)

    @property
    def body_timeout(self) -> float:
        return self._body_timeout

    def eligible(self, request: WireRequest, wire: Wire) -> bool:
        """A model route's POST with a Content-Length body and a valid key, nothing to negotiate.
        The key is checked here, with the head: an unauthenticated body is never read (aiohttp's
        path answers 401 first, as its middleware does)."""
        gw = self.gw
        keys = gw.keys
        if request.method != b"POST" or keys is None:
            return False
        if request.chunked or not 0 <= request.length <= self.max_body or not request.url.isascii():
            return False
        if request.url.partition(b"?")[0] not in ROUTES:
            return False
        picked = request.picked
        if not _NOT_HERE.isdisjoint(picked) or (self._cors and b"origin" in picked):
            return False
        if picked.get(b"content-type", b"")[:10].lower() == b"multipart/":
            return False
        entry = keys.authenticate(_presented(request))
        if entry is None:
            return False
        request.caller = (keys.store, entry)
        return True

    async def serve(self, request: WireRequest, wire: Wire) -> bool:
        """Serve `request`; False: it is another node's to serve (a cluster's), and goes to
        aiohttp's path with the rest of its connection (`relay.py` lives there), untouched."""
        gw = self.gw
        t0 = time.monotonic()
        answer = _Answer(_request_id(request))
        url = request.url.decode()
        route = url.partition("?")[0]
        model_id = "-"
        status = 500
        mine = True
        try:
            keys = gw.keys
            assert keys is not None and request.caller is not None
            store, entry = request.caller
            if keys.store is not store:  # the key file changed since the head came: ask again
                found = keys.authenticate(_presented(request))
                if found is None:
                    raise UnauthorizedError("Missing or invalid API key: send `Authorization: Bearer <key>`.")
                entry = found
            held = gw.holds.enter(entry, admin=False)
            try:
                parts = request.body
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                request.body = []
                size = len(body)
                gw.bodies.take(size)
                try:
                    content_type = request.picked.get(b"content-type", b"").decode("latin-1")
                    parsed = parse_body(body, content_type)
                    direct = gw.direct_ports.get(wire.sockport or 0) if gw.direct_ports else None
                    try:
                        model = resolve(gw.catalog, direct or parsed.name)
                    except UnknownModelError:
                        if not self._clustered(request):
                            raise
                        model = None  # another node's, perhaps
                    if model is None or (model.id in gw.owners and self._clustered(request)):
                        mine = False  # another node serves it (or owns it, for a part here)
                        request.body = [body]
                        return False
                    model_id = model.id
                    check_route(gw.catalog, model, route)
                    shaped = prepared(body, parsed.json, parsed.name, model, route, content_type)
                    stream = bool(parsed.json and parsed.json.get("stream") is True)
                    del parsed, body
                    status = await self._leased(request, wire, held, model, url, shaped, stream, answer)
                finally:
                    gw.bodies.held -= size
            finally:
                gw.holds.leave(entry, held)
        except SparkError as e:
            status = self._fail(wire, answer, e)
        except ConnectionError:
            status = CLIENT_CLOSED  # the client went away mid-answer
        except asyncio.CancelledError:
            if wire.gone and not gw.stopping:
                status = CLIENT_CLOSED  # the client went away before its answer was whole
            raise
        finally:
            if mine:
                elapsed = time.monotonic() - t0
                gw.metrics.observe(model_id, route, status, elapsed)
                gw.access.request("POST", route, model_id, status, elapsed, answer.request_id)
        return True

    def _clustered(self, request: WireRequest) -> bool:
        """Whether a request may be another node's: this node has peers, and it was not relayed
        here by one (a relayed request is never relayed again: that keeps requests from going
        round)."""
        return self.gw.peers is not None and _RELAYED not in request.picked

    async def _leased(
        self,
        request: WireRequest,
        wire: Wire,
        held: Hold,
        model: Model,
        url: str,
        body: bytes,
        stream: bool,
        answer: _Answer,
    ) -> int:
        gw = self.gw
        waited = time.monotonic()
        # a ready model with room: granted here and now, no timer and no await (#18)
        lease = gw.supervisor.lease_now(model.id)
        if lease is None:
            lease = await self._wait_lease(request, wire, held, model, stream, answer)
            if lease is None:
                return answer.status
        # From here on the lease is ours (no await before the try), and is released whatever happens.
        gw.metrics.waited(model.id, time.monotonic() - waited)
        held.on_end(lease.abort)  # a revoked key: the response ends with the error, as for a crash
        try:
            return await self._forward(request, wire, model, url, body, lease, answer)
        finally:
            lease.release()

    async def _wait_lease(
        self, request: WireRequest, wire: Wire, held: Hold, model: Model, stream: bool, answer: _Answer
    ) -> Lease | None:
        """The lease, once the model is ready; a stream is kept alive meanwhile with comments.
        None: the request failed and was answered (`answer.status`)."""
        gw = self.gw
        wait = not prefers_no_wait(request.picked.get(b"prefer", b"").decode("latin-1"))
        bound = wait_bound(gw, model)
        keepalive: asyncio.TimerHandle | None = None
        if stream:
            loop = asyncio.get_running_loop()

            def comment() -> None:
                # the stream's head goes out with the first comment; one comment a KEEPALIVE_EVERY
                nonlocal keepalive
                if wire.gone:
                    return
                if not answer.started:
                    headers = [*_SSE_HEAD, (b"X-Request-Id", answer.request_id.encode())]
                    wire.write(wire.head(200, headers, None))
                    answer.started = True
                wire.write(_chunk(waiting_comment(gw, model)))
                keepalive = loop.call_later(KEEPALIVE_EVERY, comment)

            keepalive = loop.call_later(KEEPALIVE_AFTER, comment)
        try:
            return await acquire_within(gw, model, wait, bound)
        except TimeoutError:
            answer.status = self._fail(wire, answer, waited_too_long(model))
        except asyncio.CancelledError:
            if held.error is None:
                raise  # the client went away
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # its key was revoked: the client is told
            answer.status = self._fail(wire, answer, held.error)
        except SparkError as e:
            answer.status = self._fail(wire, answer, e)
        finally:
            if keepalive is not None:
                keepalive.cancel()
        return None

    async def _forward(
        self,
        request: WireRequest,
        wire: Wire,
        model: Model,
        url: str,
        body: bytes,
        lease: Lease,
        answer: _Answer,
    ) -> int:
        gw = self.gw
        head = request_head(
            "POST",
            url,
            model.host_port,
            request.headers,
            len(body),
            answer.request_id,
            wire.peer,
            gw.engine_auth,
        )

        def early(conn: EngineConnection) -> None:
            self._early(wire, model, conn, answer)

        try:
            conn = await gw.engines.exchange(model.host_port, head, body, early)
        except EngineError as e:
            error = lease.error or UpstreamError(f"The engine of '{model.id}' could not be reached: {e}")
            return self._fail(wire, answer, error)
        lease.on_abort(conn.abort)
        try:
            return await self._respond(wire, model, conn, lease, answer)
        except EngineError as e:
            error = lease.error or UpstreamError(f"The engine of '{model.id}' failed: {e}")
            return self._fail(wire, answer, error)
        finally:
            conn.finish()  # a fully read answer leaves its connection to the pool; any other is closed

    def _early(self, wire: Wire, model: Model, conn: EngineConnection, answer: _Answer) -> None:
        """A small, whole, successful answer goes to the client from the engine's protocol
        callback, the loop turn it arrives in: the request's task wakes after, for the books."""
        if conn.status >= 400 or answer.started or wire.gone:
            return
        if (conn.header(b"content-type") or b"").startswith(SSE):
            return
        length = conn.header(b"content-length")
        if length is None or not length.isdigit() or int(length) > BUFFER_LIMIT:
            return
        data = conn.take()
        wire.respond(conn.status, _downstream(conn.headers, answer.request_id), data)
        answer.started = answer.sent = True
        self.gw.metrics.usage(model.id, data)

    async def _respond(
        self, wire: Wire, model: Model, conn: EngineConnection, lease: Lease, answer: _Answer
    ) -> int:
        if answer.sent:
            return conn.status
        if conn.status >= 400:
            status, err_body, error = engine_error(conn.status, await conn.read())
            if answer.started:
                return self._fail(wire, answer, error)
            wire.respond(status, [_JSON, (b"X-Request-Id", answer.request_id.encode())], err_body)
            return status
        is_sse = (conn.header(b"content-type") or b"").startswith(SSE)
        length = conn.header(b"content-length")
        headers = _downstream(conn.headers, answer.request_id)
        small = length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT
        if small and not answer.started and not is_sse:
            data = await conn.read()
            self.gw.metrics.usage(model.id, data)
            wire.respond(conn.status, headers, data)
            return conn.status
        if not answer.started:
            if is_sse:
                headers.append((b"X-Accel-Buffering", b"no"))
            wire.write(wire.head(conn.status, headers, None))
            answer.started = True
        tail = b""

        def sink(chunk: bytes) -> bool:
            # straight from the engine's protocol to the client's transport (engines.py: pump)
            nonlocal tail
            if wire.gone:
                return True  # the client is gone: its request is being cancelled
            wire.write(_chunk(chunk))
            if is_sse and b'"usage"' in chunk:
                tail = chunk
            return not wire.full

        try:
            await conn.pump(sink, wire.drain)
        except EngineError as e:
            error = lease.error or UpstreamError(f"The engine of '{model.id}' stopped mid-response: {e}")
            extra = {"model": model.id, "request_id": answer.request_id}
            log.warning("%s: %s", model.id, error.message, extra=extra)
            if not is_sse:
                # A body cut short cannot carry an error; closing without a terminating chunk
                # tells the client the response is incomplete rather than letting it hang.
                wire.close()
                return conn.status
            wire.write(_chunk(sse_error_event(error)))
        if tail:
            for line in tail.split(b"\n"):
                if line.startswith(b"data: {") and b'"usage"' in line:
                    self.gw.metrics.usage(model.id, line[6:])
        wire.write(b"0\r\n\r\n")
        return conn.status

    def _fail(self, wire: Wire, answer: _Answer, error: SparkError) -> int:
        """An error response, or an error event when the stream has already begun."""
        if not answer.started:
            wire.respond_error(error, request_id=answer.request_id)
            return error.code.status
        with contextlib.suppress(ConnectionError):
            wire.write(_chunk(sse_error_event(error)) + b"0\r\n\r\n")
        return 200


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _downstream(raw: Headers, request_id: str) -> Headers:
    """The engine's answer's headers as the client gets them, with the request's id."""
    out = [(k, v) for k, v in raw if k.lower() not in _NOT_DOWN]
    out.append((b"X-Request-Id", request_id.encode()))
    return out


def _presented(request: WireRequest) -> str | None:
    found = {}
    for name, header in ((b"authorization", "Authorization"), (b"x-api-key", "x-api-key")):
        if (value := request.picked.get(name)) is not None:
            found[header] = value.decode("latin-1")
    return presented_key(found)


def _request_id(request: WireRequest) -> str:
    return request_id(request.picked.get(b"x-request-id", b"").decode("latin-1"))
