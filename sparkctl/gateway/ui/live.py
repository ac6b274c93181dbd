"""`GET /ui/api/live`: what the dashboard shows, as server-sent `status` snapshots.

The admin event stream (`/api/v1/events`) says only which state a model entered, and only to
admin keys; the page shows more (in flight, queued, countdowns, ETA, the last failure, memory,
rates) to every key, which may already see the models' states on `/v1/models`. So the page gets
a whole snapshot — the admin API's own `ModelStatus` records, plus what the page adds — at once on
every state change (the same subscription the admin stream uses) and once a second besides,
which keeps counts and rates current without an event for each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sparkctl import __version__
from sparkctl.core.host import read_meminfo
from sparkctl.core.states import ModelState
from sparkctl.errors import SparkError
from sparkctl.gateway.admin import model_status
from sparkctl.gateway.context import GATEWAY, Gateway
from sparkctl.gateway.errors import sse_error_event
from sparkctl.gateway.holds import HOLD
from sparkctl.gateway.ui.pages import secured

LIVE = "/ui/api/live"
TICK = 1.0  # seconds between snapshots when nothing changes
RATE_WINDOW = 10.0  # request and token rates are averaged over this many seconds


@dataclass
class Rates:
    """Requests answered and tokens generated per second, per model, from the metrics' running
    totals sampled over a sliding window."""

    window: float = RATE_WINDOW
    _samples: deque[tuple[float, dict[str, int], dict[str, int]]] = field(default_factory=deque)

    def sample(self, now: float, answered: dict[str, int], generated: dict[str, int]) -> None:
        if self._samples and now - self._samples[-1][0] < TICK / 2:
            return  # several pages open: one sample per tick is enough
        self._samples.append((now, dict(answered), dict(generated)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def per_second(self, model: str) -> tuple[float, float]:
        if len(self._samples) < 2:
            return 0.0, 0.0
        (t0, a0, g0), (t1, a1, g1) = self._samples[0], self._samples[-1]
        span = max(t1 - t0, 1e-3)
        return (a1.get(model, 0) - a0.get(model, 0)) / span, (g1.get(model, 0) - g0.get(model, 0)) / span


@dataclass
class Memory:
    """This node's memory (unified on a Spark: what the GPU uses comes from it), read at most once
    per tick and off the event loop."""

    read_at: float = -1.0
    total: int = 0
    available: int = 0

    async def refresh(self, now: float) -> None:
        if now - self.read_at < TICK / 2:
            return
        self.read_at = now
        with contextlib.suppress(OSError, ValueError):
            info = await asyncio.to_thread(read_meminfo)
            self.total, self.available = info.get("MemTotal", 0), info.get("MemAvailable", 0)


@dataclass
class Live:
    rates: Rates = field(default_factory=Rates)
    memory: Memory = field(default_factory=Memory)


_LIVE = web.AppKey("ui_live", Live)


async def snapshot(gw: Gateway, live: Live) -> dict[str, Any]:
    now = time.monotonic()
    live.rates.sample(now, gw.metrics.answered, gw.metrics.generated)
    await live.memory.refresh(now)
    models = []
    up = (ModelState.STARTING, ModelState.READY, ModelState.DRAINING, ModelState.STOPPING)
    budgeted = 0.0
    for view in gw.supervisor.views():
        if view.id in gw.owners:
            continue  # another node's model (this node may run a part of it): listed as the owner's
        spec = gw.catalog.models[view.id].spec
        requests_per_s, tokens_per_s = live.rates.per_second(view.id)
        if view.state in up:  # its share as the scheduler counts it: declared, or learned if more
            footprint = gw.supervisor.footprint(view.id) or 0
            learned = footprint / live.memory.total if live.memory.total else 0.0
            budgeted += max(spec.engine.gpu_memory_utilization, learned)
        models.append(
            {
                **model_status(gw, view).model_dump(mode="json"),
                "description": spec.description,
                "capabilities": list(spec.capabilities),
                "node": gw.settings.cluster.node,
                "memory_bytes": gw.supervisor.footprint(view.id),
                "requests_per_s": round(requests_per_s, 2),
                "tokens_per_s": round(tokens_per_s, 1),
            }
        )
    disabled = [
        {"id": m.id, "description": m.spec.description, "disabled_reason": m.spec.disabled_reason}
        for m in gw.catalog
        if not m.spec.enabled
    ]
    memory = live.memory
    nodes: list[dict[str, Any]] = [
        {
            "name": gw.settings.cluster.node,
            "memory_total": memory.total,
            "memory_used": memory.total - memory.available if memory.total else None,
            "budget_in_use": round(budgeted, 3),
        }
    ]
    requests_per_s = round(sum(m["requests_per_s"] for m in models), 2)  # this node's own
    tokens_per_s = round(sum(m["tokens_per_s"] for m in models), 1)
    if gw.peers is not None:
        models += _peers_models(gw)
        nodes += [
            {"name": state.peer.name, "remote": True, "available": state.up, "error": state.error}
            for state in gw.peers
        ]
    return {
        "time": round(time.time(), 3),
        "version": __version__,
        "queue_depth": gw.supervisor.queue_length,
        "memory_budget": gw.settings.scheduler.memory_budget,
        "degraded": gw.supervisor.degraded,
        "nodes": nodes,
        "requests_per_s": requests_per_s,
        "tokens_per_s": tokens_per_s,
        "models": models,
        "disabled": disabled,
    }


def _peers_models(gw: Gateway) -> list[dict[str, Any]]:
    """The other nodes' models, as they list them (#15): shown, and served through this node
    (the playground relays), but started, stopped and followed on their own nodes."""
    out = []
    local = {view.id for view in gw.supervisor.views()} - set(gw.owners)
    assert gw.peers is not None
    for entry in gw.peers.listing():
        if entry["id"] in local:
            continue
        out.append(
            {
                "id": str(entry["id"]),
                "remote": True,
                "node": entry.get("node"),
                "state": str(entry.get("state", "unavailable")),
                "description": str(entry.get("description", "")),
                "memory_bytes": entry.get("memory_bytes"),
                "last_load_seconds": entry.get("load_time_s"),
                "available": entry.get("available", False),
            }
        )
    return out


async def stream(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    live = request.app[_LIVE]
    changed = asyncio.Event()
    ended: list[SparkError] = []

    def listener(model: str, state: ModelState) -> None:
        changed.set()

    def end(error: SparkError) -> None:  # its key was revoked: an error event, and the end
        ended.append(error)
        changed.set()

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    secured(response)
    await response.prepare(request)
    gw.supervisor.subscribe(listener)
    try:
        if (held := request.get(HOLD)) is not None:
            held.on_end(end)
        while not ended:
            changed.clear()
            data = json.dumps(await snapshot(gw, live), separators=(",", ":"))
            await response.write(f"event: status\ndata: {data}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), TICK)
        await response.write(b"event: error\n" + sse_error_event(ended[0]))
        await response.write_eof()
    except ConnectionError:
        pass  # the page went away
    finally:
        gw.supervisor.unsubscribe(listener)
    return response


def register(app: web.Application) -> None:
    app[_LIVE] = Live()
    app.router.add_get(LIVE, stream)
