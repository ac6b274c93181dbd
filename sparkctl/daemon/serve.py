"""`sparkctl serve`: the supervisor and the gateway in one process, as a systemd service.

Sockets come from systemd (`LISTEN_FDS`, named in `LISTEN_FDNAMES`: `gateway` for sparkctl.socket,
the model's id for each model's own socket) or, run by hand, are bound from `gateway.listen`.
systemd hears READY once the supervisor has adopted what runs and the gateway serves, STATUS as
things change, WATCHDOG while the event loop and the bus are healthy, and STOPPING on the way
out. Shutdown order: stop accepting (systemd keeps the listening sockets, so new connections wait
for the next instance instead of being refused), let in-flight responses finish within a
deadline, then close the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
from pathlib import Path

from aiohttp import web

from sparkctl.apikeys import KeyFile
from sparkctl.apikeys.engine import read_engine_key
from sparkctl.catalog import Catalog, load_catalog
from sparkctl.core.parts import PeerLink
from sparkctl.core.states import ModelState
from sparkctl.core.supervisor import Supervisor
from sparkctl.daemon import journal
from sparkctl.daemon.sd_notify import notify, watchdog_interval
from sparkctl.daemon.sockets import Listener, bound_sockets, check_exposure, systemd_sockets
from sparkctl.errors import SparkError, UpstreamError
from sparkctl.gateway.app import build_app
from sparkctl.gateway.connections import (
    FIRST_REQUEST_GRACE,
    KEEPALIVE_TIMEOUT,
    ConnectionGuard,
    GuardedSite,
)
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.express import ExpressLane
from sparkctl.gateway.peers import Peer, read_peers
from sparkctl.gateway.wire import wire_factory
from sparkctl.settings import Settings, load_settings

log = logging.getLogger("sparkctl.daemon")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
LAST_WORD = 2.0  # seconds the requests ended at the grace's end get to say so
STOPPING = "sparkctl is stopping (a restart or an upgrade) and this request outlived its grace: retry."


def first_start_since_boot(state_dir: Path | None) -> bool:
    """Preload models at boot, not at every restart: remember the boot we last started in."""
    if state_dir is None:
        return True
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return True
    marker = state_dir / "boot-id"
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == boot:
            return False
    with contextlib.suppress(OSError):
        marker.write_text(boot + "\n")
    return True


def raise_fd_limit() -> int:
    """The soft limit on open files up to the hard one (LimitNOFILE= in the unit): every held
    stream is two descriptors, the client's and the engine's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except OSError as e:  # the unit's seccomp filter (~@resources): LimitNOFILE= set both
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)
    return soft


async def serve(settings: Settings, catalog: Catalog) -> None:
    log.info("open files: up to %d", raise_fd_limit())
    listeners = systemd_sockets()
    activated = bool(listeners)
    if not activated:
        listeners = bound_sockets(settings)
    check_exposure(settings, listeners)
    # Before anything starts: a peer's key file that cannot be read is a configuration error.
    peers = await asyncio.to_thread(read_peers, settings.cluster)
    links = [PeerLink(p.name, str(p.url), p.key) for p in peers]
    supervisor = Supervisor(catalog, settings, peers=links)
    await supervisor.start(preload=await asyncio.to_thread(first_start_since_boot, _state_dir()))
    runner, guard = await _start_gateway(settings, catalog, supervisor, listeners, peers)
    stop = _stop_on_signals()
    _announce_ready(supervisor, catalog, listeners, activated)
    watchdog = asyncio.create_task(_watchdog(supervisor)) if watchdog_interval() else None
    try:
        await stop.wait()
    finally:
        await _shut_down(runner, guard, supervisor, watchdog)


def _state_dir() -> Path | None:
    """systemd's StateDirectory= (the first, if several); None when run by hand."""
    value = os.environ.get("STATE_DIRECTORY")
    return Path(value.split(":")[0]) if value else None


async def _start_gateway(
    settings: Settings, catalog: Catalog, supervisor: Supervisor, listeners: list[Listener], peers: list[Peer]
) -> tuple[web.AppRunner, ConnectionGuard]:
    """The gateway, serving on every listening socket."""
    keys = None
    if settings.gateway.auth == "required":
        keys = await asyncio.to_thread(KeyFile, settings.gateway.api_keys_file)
    engine_key = await asyncio.to_thread(read_engine_key, settings.runtime.engine_env)
    direct = {ln.port: ln.name for ln in listeners if ln.name != "gateway" and ln.port is not None}
    app = build_app(
        settings,
        catalog,
        supervisor,
        keys=keys,
        direct_ports=direct,
        access=journal.access_log(),
        engine_key=engine_key,
        peers=peers,
    )
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.gateway.shutdown_grace,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_field_size=16384,
        max_line_size=16384,
    )
    await runner.setup()
    guard = ConnectionGuard(
        max_connections=settings.gateway.max_connections, header_timeout=settings.gateway.header_timeout
    )
    app[GATEWAY].metrics.watch_connections(guard)
    # the inference requests are served off the wire, the rest by aiohttp (gateway/wire.py, #18)
    wire = wire_factory(ExpressLane(app[GATEWAY]))
    for listener in listeners:
        await GuardedSite(runner, listener.sock, guard, wire=wire).start()
        log.info("listening on %s (%s)", listener.describe(), listener.name)
    return runner, guard


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM (systemd's stop) and SIGINT set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _announce_ready(
    supervisor: Supervisor, catalog: Catalog, listeners: list[Listener], activated: bool
) -> None:
    """READY to systemd, with a STATUS line kept current from here on."""
    supervisor.subscribe(lambda model, state: _status(supervisor))
    notify("READY=1", _status_line(supervisor))
    log.info(
        "sparkctl serving %d models on %d sockets%s",
        len(catalog.enabled),
        len(listeners),
        " (socket-activated)" if activated else "",
    )


async def _shut_down(
    runner: web.AppRunner, guard: ConnectionGuard, supervisor: Supervisor, watchdog: asyncio.Task[None] | None
) -> None:
    """STOPPING to systemd; in-flight responses finish (within gateway.shutdown_grace; a stream
    still running then ends with an error event), then the bus closes."""
    grace = supervisor.settings.gateway.shutdown_grace
    notify("STOPPING=1", "STATUS=stopping: finishing in-flight requests")
    log.info("stopping: no new connections; in-flight requests get up to %.0fs", grace)
    if watchdog is not None:
        watchdog.cancel()
    await _stop_accepting(runner, guard)
    await _finish_in_flight(supervisor, grace)
    runner.app[GATEWAY].stopping = True  # the grace is over: what is cut from here on, we cut
    # aiohttp's cleanup waits for its handlers; the requests served off the wire end here
    deadline = asyncio.get_running_loop().time() + LAST_WORD
    while guard.busy and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await runner.cleanup()
    await supervisor.close()
    log.info("stopped")


async def _stop_accepting(runner: web.AppRunner, guard: ConnectionGuard) -> None:
    """No new connections: systemd keeps the listening sockets, so they wait for the next daemon.
    A connection accepted just before may not have sent its request yet, and aiohttp's shutdown
    closes such a connection at once — under load a restart lost requests that way. Each gets up
    to FIRST_REQUEST_GRACE to start its request, which is then served as any in flight."""
    for site in list(runner.sites):
        await site.stop()
    if runner.server is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIRST_REQUEST_GRACE
    connections = runner.server.connections  # aiohttp's; the guard knows those of gateway/wire.py

    def unasked() -> bool:
        return guard.unasked or any(_no_request_yet(c) for c in connections)

    while loop.time() < deadline and unasked():  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # (aiohttp has no event for a request's arrival; at most 2 s, once)


async def _finish_in_flight(supervisor: Supervisor, grace: float) -> None:
    """Let in-flight requests finish within `grace`; then end the rest with an error (a stream's
    last event says why), so none is cut silently, and give them a moment to say it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while supervisor.in_flight and loop.time() < deadline:  # noqa: ASYNC110 (no event for "none left")
        await asyncio.sleep(0.05)
    if supervisor.in_flight:
        log.warning("%d requests outlived the grace of %.0fs: ending them", supervisor.in_flight, grace)
        await supervisor.end_all(UpstreamError(STOPPING))
        deadline = loop.time() + LAST_WORD
        while supervisor.in_flight and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def _no_request_yet(connection: web.RequestHandler) -> bool:
    # aiohttp counts the requests a connection has delivered in an attribute of its own; a
    # version without it reads as "has one", which is aiohttp's own shutdown, unchanged.
    return getattr(connection, "_request_count", 1) == 0


def _status_line(supervisor: Supervisor) -> str:
    views = supervisor.views()
    ready = [v.id for v in views if v.state is ModelState.READY]
    busy = [
        f"{v.id} {v.state.value}"
        for v in views
        if v.state in (ModelState.STARTING, ModelState.DRAINING, ModelState.STOPPING, ModelState.QUEUED)
    ]
    parts = [f"ready: {', '.join(ready) or 'none'}", *busy]
    if supervisor.degraded:
        parts.insert(0, f"degraded: {supervisor.degraded}")
    if supervisor.queue_length:
        parts.append(f"{supervisor.queue_length} waiting")
    return "STATUS=" + "; ".join(parts)


def _status(supervisor: Supervisor) -> None:
    notify(_status_line(supervisor))


async def _watchdog(supervisor: Supervisor) -> None:
    interval = watchdog_interval() or 15.0
    while True:
        # A wedged event loop never gets here; a lost bus connection stops the pings, and systemd
        # restarts the daemon, which then adopts what runs.
        if supervisor.healthy:
            notify("WATCHDOG=1")
        else:
            log.error("the supervisor's tasks have ended; letting the watchdog restart the daemon")
        await asyncio.sleep(interval)


def main(config: Path | None) -> None:
    journal.setup()
    try:
        settings = load_settings(config)
        catalog = load_catalog(settings)
        asyncio.run(serve(settings, catalog))
    except SparkError as e:
        log.error("%s", e)
        notify(f"STATUS=failed: {e.message.splitlines()[0]}")
        raise SystemExit(1) from None
