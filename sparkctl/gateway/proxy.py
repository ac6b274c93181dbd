"""The OpenAI-compatible routes: route by model, wait for it, forward, stream back.

A request is authenticated (middleware) and validated before anything is scheduled. It then holds
a lease for exactly as long as its response lasts (released in `finally`, whatever happens).
Waiting for a loading model is bounded by that model's own timeouts; a streaming client gets SSE
comments meanwhile, so neither it nor a proxy in between gives up, and an error event if the
start fails. `Prefer: wait=0` answers 503 `model_loading` with a Retry-After estimate instead.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from sparkctl.catalog import Model
from sparkctl.core.lease import Lease
from sparkctl.errors import SparkError, UnknownModelError
from sparkctl.gateway import relay
from sparkctl.gateway.bodies import decoded, read_body
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.errors import error_response
from sparkctl.gateway.forward import fail, forward
from sparkctl.gateway.holds import HOLD, Hold
from sparkctl.gateway.routing import MODEL_ROUTES, check_route, parse_body, resolve, split_path_form
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

log = logging.getLogger("sparkctl.gateway")
SSE = "text/event-stream"


async def openai_route(request: web.Request) -> web.StreamResponse:
    return await serve(request, request.path, None)


async def path_form_route(request: web.Request) -> web.StreamResponse:
    """`/v1/<model>/<route>`, the reference stack's form."""
    split = split_path_form(request.path)
    if split is None:
        raise web.HTTPNotFound()
    name, route = split
    return await serve(request, route, name)


async def serve(request: web.Request, route: str, path_model: str | None) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    t0 = time.monotonic()
    request_id = _request_id(request)
    model_id = "-"
    status = 500
    limits = gw.settings.gateway
    try:
        raw = await read_body(request, limits.max_body, limits.body_timeout)
        body = await decoded(raw, request.headers.get("Content-Encoding"), limits.max_body)
        del raw
        with gw.bodies.hold(len(body)):
            content_type = request.headers.get("Content-Type", "")
            parsed = parse_body(body, content_type)
            try:
                model = resolve(gw.catalog, gw.direct_model(request) or path_model or parsed.name)
                remote = relay.owner(gw, request, model.id)  # a part here of another node's model
            except UnknownModelError as unknown:  # another node's, perhaps (#15)
                remote = await relay.locate(gw, request, path_model or parsed.name, unknown)
            if remote is not None:
                model_id = remote.model_id
                del parsed
                response = await relay.relay(request, gw, remote, body, request_id)
                status = response.status
                return response
            model_id = model.id
            check_route(gw.catalog, model, route)
            body = prepared(body, parsed.json, parsed.name, model, route, content_type)
            stream = bool(parsed.json and parsed.json.get("stream") is True)
            del parsed  # routed: the parsed JSON is not kept while the request waits
            response = await _with_lease(request, gw, model, route, body, stream, request_id)
        status = response.status
        return response
    except SparkError as e:
        response = error_response(e, {"X-Request-Id": request_id})
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionError):
        if gw.client_left(request.transport):
            status = CLIENT_CLOSED  # the client went away before its answer was whole
        raise
    finally:
        elapsed = time.monotonic() - t0
        gw.metrics.observe(model_id, route, status, elapsed)
        gw.access.request(request.method, route, model_id, status, elapsed, request_id)


def _request_id(request: web.Request) -> str:
    return request_id(request.headers.get("X-Request-Id", ""))


async def _with_lease(
    request: web.Request, gw: Gateway, model: Model, route: str, body: bytes, stream: bool, request_id: str
) -> web.StreamResponse:
    waited = time.monotonic()
    wait = not prefers_no_wait(request.headers.get("Prefer", ""))
    bound = wait_bound(gw, model)
    sse: web.StreamResponse | None = None
    try:
        if (now := gw.supervisor.lease_now(model.id)) is not None:
            lease = now  # a ready model with room: granted at once, no timer (#18)
        elif stream:
            lease, sse = await _lease_with_keepalives(request, gw, model, wait, bound, request_id)
        else:
            lease = await acquire_within(gw, model, wait, bound)
    except TimeoutError:
        return await fail(request, sse, waited_too_long(model), request_id)
    except asyncio.CancelledError:
        if (error := _ended(request)) is None:
            raise  # the client went away
        return await fail(request, sse, error, request_id)
    except _StreamFailedError as failed:
        return await fail(request, failed.sse, failed.error, request_id)
    except SparkError as e:
        return await fail(request, sse, e, request_id)
    # From here on the lease is ours (no await before the try), and is released whatever happens.
    gw.metrics.waited(model.id, time.monotonic() - waited)
    if (held := request.get(HOLD)) is not None:
        held.on_end(lease.abort)  # a revoked key: the response ends with the error, as for a crash
    try:
        return await forward(request, gw, model, route, body, lease, sse, request_id)
    finally:
        lease.release()


def _ended(request: web.Request) -> SparkError | None:
    """Why a waiting request was cancelled by the gateway itself (its key was revoked): the
    cancellation is then taken back and the client told, instead of the stream being cut."""
    held: Hold | None = request.get(HOLD)
    if held is None or held.error is None:
        return None
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    return held.error


class _StreamFailedError(Exception):
    """A start failed after the event stream had begun: the error goes out as an event."""

    def __init__(self, error: SparkError, sse: web.StreamResponse | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.sse = sse


async def _lease_with_keepalives(
    request: web.Request, gw: Gateway, model: Model, wait: bool, bound: float, request_id: str
) -> tuple[Lease, web.StreamResponse | None]:
    """Wait for a lease, sending SSE comments while the model loads so the client (and any proxy
    in between) keeps the stream open."""
    acquiring = asyncio.ensure_future(gw.supervisor.acquire(model.id, wait=wait))
    sse: web.StreamResponse | None = None
    deadline = time.monotonic() + bound
    try:
        done, _ = await asyncio.wait({acquiring}, timeout=KEEPALIVE_AFTER)
        while not done:
            if time.monotonic() > deadline:
                raise _StreamFailedError(waited_too_long(model), sse)
            if sse is None:
                sse = await _start_sse(request, request_id)
            await sse.write(waiting_comment(gw, model))
            done, _ = await asyncio.wait({acquiring}, timeout=KEEPALIVE_EVERY)
        try:
            return acquiring.result(), sse
        except SparkError as e:
            raise _StreamFailedError(e, sse) from None
    except BaseException as e:
        # Cancelled (the client left, or its key was revoked) or failed while waiting: a lease
        # granted in the meantime must go back, and a pending acquire must be withdrawn.
        if not acquiring.done():
            acquiring.cancel()
        elif not acquiring.cancelled() and acquiring.exception() is None:
            acquiring.result().release()
        if isinstance(e, asyncio.CancelledError) and (error := _ended(request)) is not None:
            raise _StreamFailedError(error, sse) from None
        raise


async def _start_sse(request: web.Request, request_id: str) -> web.StreamResponse:
    sse = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": SSE,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Request-Id": request_id,
        },
    )
    await sse.prepare(request)
    return sse


def register(app: web.Application) -> None:
    for route in MODEL_ROUTES:
        app.router.add_post(route, openai_route)
    app.router.add_post("/v1/{model}/{route:.+}", path_form_route)
