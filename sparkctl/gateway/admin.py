"""The admin API under `/api/v1/` (admin keys only): status, start, stop, and the event stream,
answering the records of `sparkctl.api`."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from sparkctl import __version__
from sparkctl.api import DaemonStatus, EtaEvent, ModelStatus, PeerModel, PeerStatus, StateEvent
from sparkctl.core.estimate import Eta
from sparkctl.core.states import ModelState, ModelView
from sparkctl.errors import SparkError
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.errors import sse_error_event
from sparkctl.gateway.holds import HOLD
from sparkctl.gateway.routing import resolve
from sparkctl.units.names import service_name

SSE_PING = 15.0  # seconds between comments on the event stream, so idle proxies keep it open


def _wall(gw: Gateway, t: float | None) -> float | None:
    return round(gw.supervisor.loop_to_wall(t), 3) if t is not None else None


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 1) if seconds is not None else None


def _on_its_way(view: ModelView) -> bool:
    """Starting, the swap's target, or wanted (a request or an operator's start is queued for it)."""
    return view.state in (ModelState.STARTING, ModelState.QUEUED) or (
        view.wanted and view.state is not ModelState.READY
    )


def model_status(gw: Gateway, view: ModelView, etas: dict[str, Eta] | None = None) -> ModelStatus:
    """`etas`: every model's, when the caller took them in one walk (a status of all models)."""
    spec = gw.catalog.models[view.id].spec
    eta = None
    if _on_its_way(view):
        eta = etas[view.id] if etas is not None and view.id in etas else gw.supervisor.eta(view.id)
    return ModelStatus(
        id=view.id,
        state=view.state,
        since=round(gw.supervisor.loop_to_wall(view.since), 3),
        in_flight=view.leases,
        waiting=view.waiting,
        idle_stop_at=_wall(gw, view.idle_stop_at),
        failures=view.failures,
        backoff_until=_wall(gw, view.backoff_until),
        last_load_seconds=round(view.last_load_seconds, 3) if view.last_load_seconds is not None else None,
        load_time_s=_rounded(gw.supervisor.typical_load(view.id)),
        eta_seconds=_rounded(eta.seconds) if eta is not None else None,
        eta_guess=eta is not None and eta.guess,
        load_time_guess_s=_rounded(gw.supervisor.load_guess(view.id)),
        exec_load_time_s=_rounded(gw.supervisor.typical_exec_load(view.id)),
        memory_bytes=gw.supervisor.footprint(view.id),
        last_error=view.last_error,
        reserved_by=view.reserved_by,
        unit=service_name(view.id),
        gpu_memory_utilization=spec.engine.gpu_memory_utilization,
        gpu=spec.serve.gpu,
        pinned=spec.serve.pinned,
    )


def _json(record: ModelStatus | DaemonStatus, status: int = 200) -> web.Response:
    return web.json_response(record.model_dump(mode="json"), status=status)


async def status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    etas = gw.supervisor.etas()
    return _json(
        DaemonStatus(
            version=__version__,
            started=round(gw.started, 3),
            queue_depth=gw.supervisor.queue_length,
            memory_budget=gw.settings.scheduler.memory_budget,
            models=[model_status(gw, v, etas) for v in gw.supervisor.views()],
            node=gw.settings.cluster.node,
            peers=peer_statuses(gw),
        )
    )


def peer_statuses(gw: Gateway) -> list[PeerStatus]:
    if gw.peers is None:
        return []
    return [
        PeerStatus(
            name=state.peer.name,
            url=str(state.peer.url),
            available=state.up,
            checked=_round(state.checked),
            answered=_round(state.answered),
            error=state.error,
            models=[
                PeerModel(id=str(m["id"]), state=str(m.get("state", "")), available=bool(m["available"]))
                for m in gw.peers.listing()
                if m["node"] == state.peer.name
            ],
        )
        for state in gw.peers
    ]


def _round(t: float | None) -> float | None:
    return round(t, 3) if t is not None else None


async def start_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    await gw.supervisor.start_model(model.id)
    return _json(model_status(gw, gw.supervisor.view(model.id)), status=202)


async def stop_model(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    model = resolve(gw.catalog, request.match_info["model"])
    now = request.query.get("now", "") in ("1", "true", "yes")
    await gw.supervisor.stop_model(model.id, now=now)
    return _json(model_status(gw, gw.supervisor.view(model.id)), status=202)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `state` event per model state change (a first snapshot too), each
    followed by an `eta` event for every other model on its way whose estimate moved."""
    gw = request.app[GATEWAY]
    etas = _Etas(gw)
    queue: asyncio.Queue[tuple[str, ModelState]] = asyncio.Queue(maxsize=1024)
    ended: list[SparkError] = []

    def listener(model: str, state: ModelState) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a client that stopped reading loses events
            queue.put_nowait((model, state))

    def end(error: SparkError) -> None:  # its key was revoked: an error event, and the end
        ended.append(error)
        with contextlib.suppress(asyncio.QueueFull):  # (a full queue wakes the writer anyway)
            queue.put_nowait(("", ModelState.STOPPED))

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    gw.supervisor.subscribe(listener)
    try:
        for view in gw.supervisor.views():
            await response.write(etas.state_event(view.id, view.state))
        if (held := request.get(HOLD)) is not None:
            held.on_end(end)
        while not ended:
            try:
                model, state = await asyncio.wait_for(queue.get(), SSE_PING)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if not ended:
                await response.write(etas.state_event(model, state) + etas.moved(besides=model))
        await response.write(b"event: error\n" + sse_error_event(ended[0]))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away: the stream is over
    finally:
        gw.supervisor.unsubscribe(listener)
    return response


class _Etas:
    """The estimates one event stream has sent, so that it sends those that moved."""

    MOVED = 1.0  # seconds: less is not news

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._sent: dict[str, float] = {}

    def state_event(self, model: str, state: ModelState) -> bytes:
        view = self._gw.supervisor.view(model)
        eta = self._gw.supervisor.eta(model) if _on_its_way(view) else None
        if eta is None:
            self._sent.pop(model, None)
        else:
            self._sent[model] = eta.seconds
        data = StateEvent(
            model=model,
            state=state,
            time=round(time.time(), 3),
            eta_seconds=_rounded(eta.seconds) if eta is not None else None,
            eta_guess=eta is not None and eta.guess,
        ).model_dump_json()
        return f"event: state\ndata: {data}\n\n".encode()

    def moved(self, besides: str) -> bytes:
        out = []
        etas = self._gw.supervisor.etas()  # one walk of the line for all of them
        for view in self._gw.supervisor.views():
            if view.id == besides or not _on_its_way(view):
                continue
            eta = etas[view.id] if view.id in etas else self._gw.supervisor.eta(view.id)
            if abs(self._sent.get(view.id, -self.MOVED) - eta.seconds) < self.MOVED:
                continue
            self._sent[view.id] = eta.seconds
            data = EtaEvent(
                model=view.id,
                eta_seconds=round(eta.seconds, 1),
                eta_guess=eta.guess,
                time=round(time.time(), 3),
            ).model_dump_json()
            out.append(f"event: eta\ndata: {data}\n\n".encode())
        return b"".join(out)


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", status)
    app.router.add_post("/api/v1/models/{model}/start", start_model)
    app.router.add_post("/api/v1/models/{model}/stop", stop_model)
    app.router.add_get("/api/v1/events", events)
