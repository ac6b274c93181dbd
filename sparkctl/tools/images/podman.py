"""Reaching Podman's REST API: which socket, and a connected podman-py client.

`podman_client` either yields a client that answered, or raises PodmanUnavailableError with the
command that fixes it (install Podman, enable podman.socket, run as root). Model units are system
units running root's Podman, so by default only root (or an explicit $CONTAINER_HOST) may use it:
images in a user's own store would be invisible to them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparkctl.errors import PodmanUnavailableError

ROOT_SOCKET = "/run/podman/podman.sock"


def podman_url(env: Mapping[str, str] | None = None) -> str:
    """The Podman API socket sparkctl talks to: $CONTAINER_HOST, else the system (root) or the
    user's socket — podman.socket, which Ubuntu ships but does not enable."""
    env = os.environ if env is None else env
    host = env.get("CONTAINER_HOST") or env.get("DOCKER_HOST")
    if host:
        return "http+unix://" + host.removeprefix("unix://") if host.startswith(("unix://", "/")) else host
    if os.geteuid() == 0:
        return f"http+unix://{ROOT_SOCKET}"
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"http+unix://{runtime}/podman/podman.sock"


def _refuse_user_store(env: Mapping[str, str], system: bool) -> None:
    if system and os.geteuid() != 0 and not (env.get("CONTAINER_HOST") or env.get("DOCKER_HOST")):
        raise PodmanUnavailableError(
            "sparkctl's model units run root's Podman, so its images belong in root's image store",
            hint="run it as root (sudo)",
        )


def _require_socket(socket: str | None, fix: str) -> None:
    """A missing local socket: say whether Podman itself is missing or only its API service."""
    if socket is None or Path(socket).exists():
        return
    if shutil.which("podman") is None:
        raise PodmanUnavailableError(
            "Podman is not installed on this machine: sparkctl's images are built and run on the Spark",
            hint="sudo apt install podman (DGX OS 7 / Ubuntu 24.04 ship Podman 4.9 with Quadlet)",
        )
    raise PodmanUnavailableError(f"the Podman API socket {socket} does not exist", hint=fix)


@contextmanager
def podman_client(env: Mapping[str, str] | None = None, *, system: bool = True) -> Iterator[Any]:
    """A connected podman-py client, or PodmanUnavailableError that says how to get one.

    `system`: the model units are system units (systemd.bus = "system"), which run root's Podman;
    images in a user's own store would be invisible to them, so only root may build or pull."""
    env = os.environ if env is None else env
    _refuse_user_store(env, system)
    url = podman_url(env)
    socket = url.removeprefix("http+unix://") if url.startswith("http+unix://") else None
    fix = (
        "sudo systemctl enable --now podman.socket"
        if os.geteuid() == 0 or socket == ROOT_SOCKET
        else "systemctl --user enable --now podman.socket (or run as root)"
    )
    _require_socket(socket, fix)
    from podman import PodmanClient  # ~0.15 s to import: paid only by commands that talk to Podman

    client: Any = PodmanClient(base_url=url)
    try:
        try:
            client.version()
        except Exception as e:  # podman's APIError, or the HTTP library's connection errors
            raise PodmanUnavailableError(f"cannot talk to Podman at {url}: {e}", hint=fix) from None
        yield client
    finally:
        client.close()
