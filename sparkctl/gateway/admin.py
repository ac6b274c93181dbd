"""The listing routes (`/v1/models`), health, metrics, and the admin API under `/api/v1/`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from .. import __version__
from ..catalog import Model
from ..scheduler import ModelState, ModelView
from .context import GATEWAY, Gateway
from .routing import resolve

SSE_PING = 15.0  # seconds between comments on the event stream, so idle proxies keep it open


def model_object(gw: Gateway, model: Model) -> dict[str, Any]:
    """A model as `/v1/models` lists it (BRIEF §4.5)."""
    spec = model.spec
    state = gw.supervisor.view(model.id).state.value if spec.enabled else ModelState.STOPPED.value
    obj: dict[str, Any] = {
        "id": model.id,
        "object": "model",
        "created": int(model.file.stat().st_mtime) if model.file.exists() else int(gw.started),
        "owned_by": "sparkctl",
        "state": state,
        "capabilities": list(spec.capabilities),
        "context_length": spec.advertised_context,
        "status": spec.status.value,
        "description": spec.description,
    }
    if spec.aliases:
        obj["aliases"] = list(spec.aliases)
    if not spec.enabled:
        obj["disabled_reason"] = spec.disabled_reason
    return obj


async def list_models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    fixed = gw.direct_model(request)
    models = [gw.catalog.models[fixed]] if fixed else list(gw.catalog)
    return web.json_response({"object": "list", "data": [model_object(gw, m) for m in models]})


async def get_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = gw.catalog.resolve(request.match_info["model"])
    return web.json_response(model_object(gw, model))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return web.Response(
        body=gw.metrics.exposition(),
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _view(gw: Gateway, view: ModelView) -> dict[str, Any]:
    sup = gw.supervisor
    model = gw.catalog.models[view.id]
    return {
        "id": view.id,
        "state": view.state.value,
        "since": round(sup.loop_to_wall(view.since), 3),
        "in_flight": view.leases,
        "waiting": view.waiting,
        "idle_stop_at": round(sup.loop_to_wall(view.idle_stop_at), 3)
        if view.idle_stop_at is not None
        else None,
        "failures": view.failures,
        "backoff_until": round(sup.loop_to_wall(view.backoff_until), 3) if view.backoff_until else None,
        "last_load_seconds": round(view.last_load_seconds, 3) if view.last_load_seconds is not None else None,
        "unit": f"sparkctl-{view.id}.service",
        "gpu_memory_utilization": model.spec.engine.gpu_memory_utilization,
        "gpu": model.spec.serve.gpu,
        "pinned": model.spec.serve.pinned,
    }


async def status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return web.json_response(
        {
            "version": __version__,
            "started": round(gw.started, 3),
            "queue_depth": gw.supervisor.queue_length,
            "memory_budget": gw.settings.scheduler.memory_budget,
            "models": [_view(gw, v) for v in gw.supervisor.views()],
        }
    )


async def start_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    await gw.supervisor.start_model(model.id)
    return web.json_response(_view(gw, gw.supervisor.view(model.id)), status=202)


async def stop_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    now = request.query.get("now", "") in ("1", "true", "yes")
    await gw.supervisor.stop_model(model.id, now=now)
    return web.json_response(_view(gw, gw.supervisor.view(model.id)), status=202)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `state` event per model state change (a first snapshot too)."""
    gw = request.app[GATEWAY]
    queue: asyncio.Queue[tuple[str, ModelState]] = asyncio.Queue(maxsize=1024)

    def listener(model: str, state: ModelState) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a client that stopped reading loses events
            queue.put_nowait((model, state))

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    gw.supervisor.listeners.append(listener)
    try:
        for view in gw.supervisor.views():
            await response.write(_event(gw, view.id, view.state))
        while True:
            try:
                model, state = await asyncio.wait_for(queue.get(), SSE_PING)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            await response.write(_event(gw, model, state))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        gw.supervisor.listeners.remove(listener)
    return response


def _event(gw: Gateway, model: str, state: ModelState) -> bytes:
    data = json.dumps({"model": model, "state": state.value, "time": round(time.time(), 3)})
    return f"event: state\ndata: {data}\n\n".encode()


def register(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/models/{model}/start", start_model)
    app.router.add_post("/api/v1/models/{model}/stop", stop_model)
    app.router.add_get("/api/v1/events", events)
