"""Relaying a leased request to its model's engine and the answer back to the client (#18).

The request handler (proxy.py) has authenticated, routed, shaped and leased the request; this
module moves the bytes: the request up over a warm connection (engines.py), and the answer down —
an engine's error in sparkctl's envelope, a small answer of known length in one piece, anything
else relayed as it arrives, each write waiting while the client is slow (backpressure both
ways). If the model goes away under the request (a crash, a forced stop, a revoked key), the
lease's abort cuts the engine's answer short and the client's response ends with the lease's
error. A client that hangs up cancels the handler, and the `finally` closes the engine's
connection at once, which is what stops its generation.
"""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web
from aiohttp.http import StreamWriter

from sparkctl.catalog import Model
from sparkctl.core.lease import Lease
from sparkctl.errors import SparkError, UpstreamError
from sparkctl.gateway.context import Gateway
from sparkctl.gateway.engines import EngineConnection, EngineError
from sparkctl.gateway.errors import error_response, sse_error_event
from sparkctl.gateway.upstream import engine_error, request_head, response_headers

log = logging.getLogger("sparkctl.gateway")
BUFFER_LIMIT = 1024 * 1024  # an engine answer this small (with a length) is relayed in one piece
SSE = b"text/event-stream"
CLIENT_HIGH_WATER = 64 * 1024  # bytes unsent to a client before the engine's answer is paused


async def forward(
    request: web.Request,
    gw: Gateway,
    model: Model,
    route: str,
    body: bytes,
    lease: Lease,
    sse: web.StreamResponse | None,
    request_id: str,
) -> web.StreamResponse:
    head = request_head(
        request.method,
        route + _query(request),
        model.host_port,
        request.raw_headers,
        len(body),
        request_id,
        request.remote,
        gw.engine_auth,
    )
    try:
        conn = await gw.engines.exchange(model.host_port, head, body)
    except EngineError as e:
        error = lease.error or UpstreamError(f"The engine of '{model.id}' could not be reached: {e}")
        return await fail(request, sse, error, request_id)
    # If the model goes away under the request, cut the engine's answer short: the relay below
    # then ends the client's response with the lease's error.
    lease.on_abort(conn.abort)
    try:
        return await _respond(request, gw, model, conn, lease, sse, request_id)
    except EngineError as e:
        error = lease.error or UpstreamError(f"The engine of '{model.id}' failed: {e}")
        return await fail(request, sse, error, request_id)
    finally:
        conn.finish()  # a fully read answer leaves its connection to the pool; any other is closed


async def fail(
    request: web.Request, sse: web.StreamResponse | None, error: SparkError, request_id: str
) -> web.StreamResponse:
    """An error response, or an error event when the stream has already begun."""
    if sse is None:
        return error_response(error, {"X-Request-Id": request_id})
    with contextlib.suppress(ConnectionError):
        await sse.write(sse_error_event(error))
        await sse.write_eof()
    return sse


async def _respond(
    request: web.Request,
    gw: Gateway,
    model: Model,
    conn: EngineConnection,
    lease: Lease,
    sse: web.StreamResponse | None,
    request_id: str,
) -> web.StreamResponse:
    """The client's side of the engine's answer: its error, the answer in one piece, or a relay."""
    if conn.status >= 400:
        status, err_body, error = engine_error(conn.status, await conn.read())
        if sse is not None:
            return await fail(request, sse, error, request_id)
        headers = {"X-Request-Id": request_id}
        return web.Response(status=status, body=err_body, content_type="application/json", headers=headers)
    is_sse = (conn.header(b"content-type") or b"").startswith(SSE)
    length = conn.header(b"content-length")
    if sse is None and not is_sse and length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT:
        data = await conn.read()
        gw.metrics.usage(model.id, data)
        return web.Response(status=conn.status, body=data, headers=response_headers(conn.headers, request_id))
    return await _relay(request, gw, model, conn, lease, sse, is_sse, request_id)


async def _relay(
    request: web.Request,
    gw: Gateway,
    model: Model,
    conn: EngineConnection,
    lease: Lease,
    sse: web.StreamResponse | None,
    is_sse: bool,
    request_id: str,
) -> web.StreamResponse:
    if sse is None:
        sse = web.StreamResponse(status=conn.status, headers=response_headers(conn.headers, request_id))
        if is_sse:
            sse.headers["X-Accel-Buffering"] = "no"
        await sse.prepare(request)
    tail = b""
    writer, transport = request.writer, request.transport
    try:
        if isinstance(writer, StreamWriter) and transport is not None:
            # Straight from the engine's protocol to the client's transport (engines.py: pump).
            framed = writer.chunked

            def sink(chunk: bytes) -> bool:
                nonlocal tail
                if transport.is_closing():
                    return True  # the client is gone: its handler is being cancelled
                if framed:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if is_sse and b'"usage"' in chunk:
                    tail = chunk
                return transport.get_write_buffer_size() <= CLIENT_HIGH_WATER

            await conn.pump(sink, writer.drain)
        else:
            while chunk := await conn.next_chunk():
                await sse.write(chunk)
                if is_sse and b'"usage"' in chunk:
                    tail = chunk
    except EngineError as e:
        error = lease.error or UpstreamError(f"The engine of '{model.id}' stopped mid-response: {e}")
        log.warning("%s: %s", model.id, error.message, extra={"model": model.id, "request_id": request_id})
        if is_sse:
            with contextlib.suppress(ConnectionError):
                await sse.write(sse_error_event(error))
        else:
            # A body cut short cannot carry an error; closing without a terminating chunk
            # tells the client the response is incomplete rather than letting it hang.
            if request.transport is not None:
                request.transport.close()
            return sse
    if tail:
        for line in tail.split(b"\n"):
            if line.startswith(b"data: {") and b'"usage"' in line:
                gw.metrics.usage(model.id, line[6:])
    with contextlib.suppress(ConnectionError):
        await sse.write_eof()
    return sse


def _query(request: web.Request) -> str:
    # As the client sent it: decoding it (request.query_string) would lose %23 and split on %0d%0a.
    raw = request.rel_url.raw_query_string
    return f"?{raw}" if raw else ""
