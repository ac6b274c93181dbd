"""The daemon's listening sockets: those systemd passed (socket activation, sd_listen_fds with
names: `gateway` for sparkctl.socket, the model's id for each model's own socket), or, run by
hand, those bound from `gateway.listen`; and the rule that `auth = "none"` never faces a network."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sparkctl.errors import ConfigError, Issue
from sparkctl.settings import Settings, is_loopback, split_host_port

SD_LISTEN_FDS_START = 3


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
