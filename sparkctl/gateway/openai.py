"""The OpenAI listing routes (`/v1/models`, `/v1/models/{id}`), `/health` and `/metrics`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sparkctl.catalog import Model
from sparkctl.core.states import ModelState
from sparkctl.errors import UnknownModelError
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.peers import RELAYED


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 1) if seconds is not None else None


def model_object(gw: Gateway, model: Model) -> dict[str, Any]:
    """A model as `/v1/models` lists it (BRIEF §4.5)."""
    spec = model.spec
    state = gw.supervisor.view(model.id).state.value if spec.enabled else ModelState.STOPPED.value
    obj: dict[str, Any] = {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "sparkctl",
        "state": state,
        "capabilities": list(spec.capabilities),
        "context_length": spec.advertised_context,
        "status": spec.status.value,
        "description": spec.description,
        "node": gw.settings.cluster.node,  # cluster.node: the hostname unless set
        # false only for a cluster peer's model while that peer does not answer (#15)
        "available": True,
        # learned over the model's starts, kept across restarts; null before the first
        "load_time_s": _rounded(gw.supervisor.typical_load(model.id)) if spec.enabled else None,
        # until then, a guess from its size on disk (null once a start was seen)
        "load_time_guess_s": _rounded(gw.supervisor.load_guess(model.id)) if spec.enabled else None,
        # what it was last seen to take once ready (MemAvailable's drop or its cgroup)
        "memory_bytes": gw.supervisor.footprint(model.id) if spec.enabled else None,
    }
    if spec.aliases:
        obj["aliases"] = list(spec.aliases)
    if not spec.enabled:
        obj["disabled_reason"] = spec.disabled_reason
    return obj


def _served_here_or_by_owner(gw: Gateway, model: Model) -> dict[str, Any]:
    """A model as this node lists it; one it runs only a worker part of, as its owner lists it
    (the owner serves it: its state is the model's). An owner not heard from yet: listed as
    its, unavailable."""
    owner = gw.owners.get(model.id)
    if owner is None or gw.peers is None:
        return model_object(gw, model)
    for entry in gw.peers.listing():
        if entry["id"] == model.id and entry["node"] == owner:
            return entry
    return {**model_object(gw, model), "node": owner, "available": False, "state": "unavailable"}


async def list_models(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    fixed = gw.direct_model(request)
    models = [gw.catalog.models[fixed]] if fixed else list(gw.catalog)
    # The whole cluster's models, but to a peer that asks (with the relay marker) only this
    # node's own: each node lists what it serves itself, so listings never go round.
    cluster = gw.peers is not None and not fixed and RELAYED not in request.headers
    if cluster and gw.peers is not None:
        await gw.peers.settled()
    if cluster:
        data = [_served_here_or_by_owner(gw, m) for m in models]
    else:  # a peer asks: only what this node serves itself (never a part of another's model)
        data = [model_object(gw, m) for m in models if m.id not in gw.owners]
    if cluster and gw.peers is not None:
        local = {m.id for m in models}
        data.extend(entry for entry in gw.peers.listing() if entry["id"] not in local)
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    name = request.match_info["model"]
    try:
        model = gw.catalog.resolve(name)
        if model.id in gw.owners and RELAYED not in request.headers:
            return web.json_response(_served_here_or_by_owner(gw, model))
    except UnknownModelError:
        if gw.peers is None or RELAYED in request.headers or (remote := await gw.peers.locate(name)) is None:
            raise
        entry = next(
            e for e in gw.peers.listing() if e["id"] == remote.model_id and e["node"] == remote.peer.name
        )
        return web.json_response(entry)
    return web.json_response(model_object(gw, model))


async def health(request: web.Request) -> web.Response:
    """200 while the daemon serves; `degraded` (with the reason) while it cannot start or stop
    models — ready ones still serve."""
    degraded = request.app[GATEWAY].supervisor.degraded
    return web.json_response(
        {"status": "ok"} if degraded is None else {"status": "degraded", "reason": degraded}
    )


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    return web.Response(
        body=gw.metrics.exposition(),
        content_type="text/plain",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def register(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
