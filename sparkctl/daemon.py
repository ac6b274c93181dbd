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
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import journal
from .apikeys import KeyFile
from .catalog import Catalog, load_catalog
from .errors import ConfigError, Issue, SparkError
from .gateway import build_app
from .scheduler import ModelState
from .sdnotify import notify, watchdog_interval
from .settings import Settings, is_loopback, split_host_port
from .supervisor import Supervisor

log = logging.getLogger("sparkctl.daemon")
SD_LISTEN_FDS_START = 3
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
SHUTDOWN_GRACE = 60.0  # seconds in-flight responses get to finish when the daemon stops


@dataclass
class Listener:
    name: str  # "gateway", or a model id
    sock: socket.socket

    @property
    def port(self) -> int | None:
        if self.sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(self.sock.getsockname()[1])
        return None

    def describe(self) -> str:
        address = self.sock.getsockname()
        if isinstance(address, tuple):
            return f"{address[0]}:{address[1]}"
        return str(address)


def systemd_sockets() -> list[Listener]:
    """The sockets systemd passed (sd_listen_fds_with_names), or none."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    out = []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        out.append(Listener(names[i] if i < len(names) and names[i] else "gateway", socket.socket(fileno=fd)))
    return out


def bound_sockets(settings: Settings) -> list[Listener]:
    out = []
    for address in settings.gateway.listen:
        host, port = split_host_port(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        out.append(Listener("gateway", sock))
    return out


def check_exposure(settings: Settings, listeners: list[Listener]) -> None:
    """auth = "none" is refused unless every socket is loopback (or a local unix socket)."""
    if settings.gateway.auth != "none":
        return
    exposed = [
        ln.describe()
        for ln in listeners
        if ln.port is not None and not is_loopback(str(ln.sock.getsockname()[0]))
    ]
    if exposed:
        raise ConfigError(
            [
                Issue(
                    "gateway.auth",
                    "",
                    'auth = "none" is refused on a non-loopback socket: ' + ", ".join(exposed),
                )
            ]
        )


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


async def serve(settings: Settings, catalog: Catalog) -> None:
    listeners = systemd_sockets()
    activated = bool(listeners)
    if not activated:
        listeners = bound_sockets(settings)
    check_exposure(settings, listeners)
    state_dir = (
        Path(os.environ["STATE_DIRECTORY"].split(":")[0]) if os.environ.get("STATE_DIRECTORY") else None
    )
    supervisor = Supervisor(catalog, settings)
    await supervisor.start(preload=first_start_since_boot(state_dir))
    keys = KeyFile(settings.gateway.api_keys_file) if settings.gateway.auth == "required" else None
    direct = {ln.port: ln.name for ln in listeners if ln.name != "gateway" and ln.port is not None}
    app = build_app(settings, catalog, supervisor, keys=keys, direct_ports=direct)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE,
        max_field_size=16384,
        max_line_size=16384,
    )
    await runner.setup()
    for listener in listeners:
        await web.SockSite(runner, listener.sock).start()
        log.info("listening on %s (%s)", listener.describe(), listener.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor.listeners.append(lambda model, state: _status(supervisor))
    notify("READY=1", _status_line(supervisor))
    log.info(
        "sparkctl serving %d models on %d sockets%s",
        len(catalog.enabled),
        len(listeners),
        " (socket-activated)" if activated else "",
    )
    watchdog = asyncio.create_task(_watchdog(supervisor)) if watchdog_interval() else None
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1", "STATUS=stopping: finishing in-flight requests")
        log.info("stopping: no new connections; in-flight requests get up to %.0fs", SHUTDOWN_GRACE)
        if watchdog is not None:
            watchdog.cancel()
        await runner.cleanup()
        await supervisor.close()
        log.info("stopped")


def _status_line(supervisor: Supervisor) -> str:
    views = supervisor.views()
    ready = [v.id for v in views if v.state is ModelState.READY]
    busy = [
        f"{v.id} {v.state.value}"
        for v in views
        if v.state in (ModelState.STARTING, ModelState.DRAINING, ModelState.STOPPING, ModelState.QUEUED)
    ]
    parts = [f"ready: {', '.join(ready) or 'none'}", *busy]
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
            log.error("supervisor unhealthy (bus connection lost?); letting the watchdog restart us")
        await asyncio.sleep(interval)


def main(config: Path | None) -> None:
    from .settings import load_settings

    journal.setup()
    try:
        settings = load_settings(config)
        catalog = load_catalog(settings)
        asyncio.run(serve(settings, catalog))
    except SparkError as e:
        log.error("%s", e)
        notify(f"STATUS=failed: {e.message.splitlines()[0]}")
        raise SystemExit(1) from None
