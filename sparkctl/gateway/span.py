"""The peer side of a model that spans nodes (#15), under the admin API: what the node that owns
it asks of each other node it spans.

    GET    /api/v1/models/{model}/preflight                         what it lacks here to start
    POST   /api/v1/reservations/{model}?holder=NODE&lease=SECONDS   reserve, or renew
                                                    (&renew=1: renew only, 409 if it ended)
    DELETE /api/v1/reservations/{model}?holder=NODE                 release

The preflight is asked of every node before anything stops anywhere: a node that lacks the
weights or the image fails the start at once, naming the node and the command that fixes it
(core/preflight.py, the same check a unit runs before its engine). It answers for a disabled
model too: a spanning model is pulled on every node (`sparkctl pull`) and checked before it is
enabled. A reservation is honoured by
this node's own scheduler like a local request for an exclusive model (core/scheduler.py).

A POST answers at once — 200 when the node is held for the holder, 202 while the reservation
waits its turn — so the owner polls by renewing, every third of its lease, and a lost connection
or a dead owner never holds a node longer than the lease. Only a configured peer may hold this
node (the key that asks is a peer's admin key; the name must be one of `cluster.peers` too).
"""

from __future__ import annotations

import asyncio
import math

from aiohttp import web

from sparkctl.api import PreflightStatus, ReservationStatus
from sparkctl.catalog import Model
from sparkctl.catalog.span import fingerprint
from sparkctl.core.preflight import lacks
from sparkctl.errors import BadRequestError, InvalidModelNameError
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.routing import MODEL_NAME, resolve

# A lease long enough for an owner that renews every third of it to ride out a slow round trip,
# short enough that a node an owner forgot comes back within minutes.
LEASE_MIN = 1.0
LEASE_MAX = 600.0


def _holder(gw: Gateway, request: web.Request) -> str:
    holder = request.query.get("holder", "")
    peers = [p.name for p in gw.settings.cluster.peers]
    if holder not in peers:
        known = ", ".join(peers) or "none"
        raise BadRequestError(
            f"holder must name a peer of this node (cluster.peers: {known}); got {holder!r}."
        )
    return holder


def _lease(request: web.Request) -> float:
    raw = request.query.get("lease", "")
    try:
        lease = float(raw)
    except ValueError:
        lease = math.nan
    if not LEASE_MIN <= lease <= LEASE_MAX:
        raise BadRequestError(f"lease must be seconds from {LEASE_MIN:g} to {LEASE_MAX:g}, got {raw!r}.")
    return lease


def catalog_model(gw: Gateway, name: str) -> Model:
    """The catalog model a path names, disabled ones too: a spanning model is pulled and checked
    on every node before it is enabled (`sparkctl pull` fetches a disabled model locally too)."""
    if not MODEL_NAME.fullmatch(name):
        raise InvalidModelNameError(f"{name[:80]!r} is not a valid model name.")
    return gw.catalog.resolve(name)  # UnknownModelError → 404


async def preflight(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = catalog_model(gw, request.match_info["model"])
    spec = model.spec
    missing = await asyncio.to_thread(
        lacks,
        model.id,
        gw.settings.runtime.hf_cache,
        spec.source.hf_repo,
        spec.source.revision,
        spec.engine.image,
        model.extra_repos,
    )
    record = PreflightStatus(
        node=gw.settings.cluster.node,
        model=model.id,
        ready=not missing,
        missing=[lack.message for lack in missing],
        catalog_sha256=fingerprint(spec),
    )
    return web.json_response(record.model_dump(mode="json"))


async def reserve(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    holder, lease = _holder(gw, request), _lease(request)
    renew = request.query.get("renew") == "1"
    granted = await gw.supervisor.reserve(model.id, holder, lease, renew=renew)
    wanted = granted and gw.supervisor.wanted_back(model.id)
    record = ReservationStatus(
        model=model.id, holder=holder, granted=granted, lease_s=lease, wanted_back=wanted
    )
    return web.json_response(record.model_dump(mode="json"), status=200 if granted else 202)


async def release(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    await gw.supervisor.release_reservation(model.id, _holder(gw, request))
    return web.Response(status=204)


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/models/{model}/preflight", preflight)
    app.router.add_post("/api/v1/reservations/{model}", reserve)
    app.router.add_delete("/api/v1/reservations/{model}", release)
