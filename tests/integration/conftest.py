"""Fixtures and helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkctl.apikeys.engine import read_engine_key
from sparkctl.catalog import load_catalog
from sparkctl.core.states import ModelState
from sparkctl.core.supervisor import Supervisor
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.image import IMAGE
from sparkctl.settings import Settings
from sparkctl.units.render import render
from sparkctl.units.sync import sync
from tests.helpers import write_model

SPARKCTL = str(Path(sys.prefix) / "bin" / "sparkctl")


@pytest.fixture
def deploy(box: Box) -> Iterator[Any]:
    """Render a catalog into the box and reload; on teardown stop everything and remove the files."""
    deployed: list[Path] = []

    def _deploy(catalog_dir: Path, settings: Settings) -> list[str]:
        files = render(load_catalog(settings, [catalog_dir]), settings)
        dirs = {"quadlet": box.quadlet_dir, "unit": box.unit_dir}
        sync(files, dirs)
        deployed.extend(dirs[f.destination] / f.name for f in files)
        box.daemon_reload()
        return [f.name for f in files]

    yield _deploy
    box.systemctl("stop", "sparkctl-*", check=False)
    for path in deployed:
        path.unlink(missing_ok=True)
    box.daemon_reload()
    box.systemctl("reset-failed", check=False)


def get(url: str, timeout: float = 2, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def engine_headers(settings: Settings) -> dict[str, str]:
    """What the daemon sends an engine: its key (the engines of the box take one)."""
    key = read_engine_key(settings.runtime.engine_env)
    assert key is not None, f"no engine key in {settings.runtime.engine_env}"
    return {"Authorization": f"Bearer {key}"}


def install(box: Box, config: Path) -> str:
    """`sparkctl install` into the box, and an admin key: the one install printed, or (when an
    earlier install in this box made the first key) a new one of its own."""
    printed = box.run(SPARKCTL, "--config", str(config), "install", timeout=300).stdout.strip()
    if printed:
        return printed
    name = f"tests-{os.getpid()}-{next(_KEY_NAMES)}"
    return box.run(SPARKCTL, "--config", str(config), "keys", "add", name, "--admin").stdout.strip()


_KEY_NAMES = itertools.count(1)


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def emulated(
    directory: Path, model_id: str, port: int, *, container: bool = False, load_time: float = 0.3, **over: Any
) -> None:
    engine: dict[str, Any] = {
        "port": port,
        "host_port": port,
        "args": ["--load-time", str(load_time)],
        "ulimits": {},
    }
    if container:
        engine["image"] = IMAGE
    else:
        engine.update(runtime="process", image=None, command=[SPARKCTL, "emulate"])
    engine.update(over.pop("engine", {}))
    write_model(directory, model_id, engine=engine, **over)


async def reach(sup: Supervisor, within: float = 10, **wanted: ModelState) -> None:
    """Wait (on the supervisor's state events, not by polling) until models are in these states."""
    done = asyncio.Event()

    def check(*_: object) -> None:
        if all(sup.view(m.replace("_", "-")).state is st for m, st in wanted.items()):
            done.set()

    sup.subscribe(check)
    try:
        check()
        await asyncio.wait_for(done.wait(), within)
    finally:
        sup.unsubscribe(check)


def drop_bus(sup: Supervisor) -> None:
    """Break the transport under the supervisor's connection to systemd, as a restarted
    dbus-daemon or a killed connection does: the connection's own socket, shut down."""
    systemd = sup._fx.systemd
    assert systemd is not None and systemd._bus._sock is not None
    systemd._bus._sock.shutdown(socket.SHUT_RDWR)
