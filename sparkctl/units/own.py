"""sparkctl's own units: `sparkctl.service` and `sparkctl.socket` for this host (or a user), from
the same templates as the model units, and the polkit rule that lets the daemon's user start and
stop exactly the catalog's model units. `install` writes them; `render --check` verifies the
model units beside them, because every model socket hands its connections to `sparkctl.service`."""

from __future__ import annotations

import json
from pathlib import Path

from sparkctl.catalog import Catalog
from sparkctl.paths import ADMIN_SOCKET, USER_ADMIN_SOCKET_SPECIFIER
from sparkctl.quantities import systemd_seconds
from sparkctl.settings import DEFAULT_CONFIG, Settings, split_host_port
from sparkctl.units import quoting
from sparkctl.units.names import DAEMON_SERVICE, DAEMON_SOCKET, service_name
from sparkctl.units.render import UnitFile, templates

# seconds systemd allows the daemon's stop beyond its own grace (listeners, supervisor, bus)
STOP_MARGIN = 30.0


def own_units(settings: Settings, executable: Path, config: Path, *, user: bool = False) -> list[UnitFile]:
    """sparkctl.service and sparkctl.socket for this host (or this user)."""
    listen = [_listen_stream(a) for a in settings.gateway.listen]
    socket_text = (
        templates()
        .get_template("sparkctl.socket.j2")
        .render(
            listen=listen,
            admin_socket=USER_ADMIN_SOCKET_SPECIFIER if user else str(ADMIN_SOCKET),
            user=user,
        )
    )
    argv = [str(executable)] + (["--config", str(config)] if config != DEFAULT_CONFIG else []) + ["serve"]
    home = any(str(p).startswith(("/root/", "/home/")) for p in _runs_from(executable))
    service_text = (
        templates()
        .get_template("sparkctl.service.j2")
        .render(
            exec_start=quoting.command_line(argv),
            # A sparkctl installed under a home directory must stay readable to the daemon.
            protect_home="read-only" if home else "yes",
            user=user,
            stop_timeout=systemd_seconds(settings.gateway.shutdown_grace + STOP_MARGIN),
            cache_paths=None if user else "-" + quoting.plain(str(settings.runtime.hf_cache)),
            **_state_dir(settings, user=user),
        )
    )
    return [
        UnitFile("unit", DAEMON_SERVICE, service_text),
        UnitFile("unit", DAEMON_SOCKET, socket_text),
    ]


def _state_dir(settings: Settings, *, user: bool) -> dict[str, str | None]:
    """runtime.state_dir, writable to the daemon: systemd's StateDirectory= (made and owned for
    it) where it lies under /var/lib, else the path itself (made by the operator). A user's
    manager keeps it as the user's own files allow."""
    state = settings.runtime.state_dir
    if user:
        return {"state_directory": None, "state_paths": None}
    if state.is_relative_to("/var/lib"):
        return {"state_directory": quoting.plain(str(state.relative_to("/var/lib"))), "state_paths": None}
    return {"state_directory": None, "state_paths": "-" + quoting.plain(str(state))}


def _runs_from(executable: Path) -> list[Path]:
    """The files the daemon's ExecStart= needs: the script and the interpreter its #! names."""
    paths = [executable.resolve()]
    try:
        with executable.open("rb") as f:
            first = f.readline(512)
    except OSError:
        return paths
    if first.startswith(b"#!"):
        interpreter = first[2:].strip().split()[0].decode(errors="replace")
        paths.append(Path(interpreter).resolve())
    return paths


def _listen_stream(address: str) -> str:
    host, port = split_host_port(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def polkit_rule(catalog: Catalog) -> str:
    """The rule for the system manager: start and stop, on the enabled models' services only.
    Exact names, not a pattern: systemd ≥ 257 gives polkit the name of a transient unit too, and
    `sparkctl-*.service` would let the daemon's user start one as root."""
    units = [json.dumps(service_name(m.id)) for m in catalog.enabled]
    return templates().get_template("sparkctl.polkit.rules.j2").render(units=units)
