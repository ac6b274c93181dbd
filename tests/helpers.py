"""Small builders shared by the unit and integration tests."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from sparkctl.gateway.connections import ConnectionGuard, GuardedSite
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.express import ExpressLane
from sparkctl.gateway.wire import wire_factory
from sparkctl.sandbox.host import spare_port, spare_socket


def free_port() -> int:
    """A port nothing listens on, outside the range the kernel hands to outgoing connections."""
    return spare_port()


def listening_socket() -> socket.socket:
    """A socket already bound and listening on a spare port: hand it to the server, no race at all."""
    s = spare_socket()
    s.listen(128)
    return s


BASE_ENTRY: dict[str, Any] = {
    "description": "a test model",
    "status": "experimental",
    "source": {"hf_repo": "org/model"},
    "engine": {
        "image": "localhost/sparkctl-emulator:latest",
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.3,
    },
}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def to_toml(entry: dict[str, Any]) -> str:
    """TOML for a catalog entry: scalars first, then one [table] per top-level table."""
    lines = [f"{k} = {toml_value(v)}" for k, v in entry.items() if not isinstance(v, dict)]
    for k, v in entry.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{json.dumps(kk)} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None value removes the key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def write_model(directory: Path, model_id: str, **over: Any) -> Path:
    entry = merge({"id": model_id, **BASE_ENTRY}, over)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model_id}.toml"
    path.write_text(to_toml(entry), encoding="utf-8")
    return path


async def serve(runner: web.AppRunner, sock: socket.socket | None = None) -> int:
    """Serve `runner` as the daemon does (gateway/wire.py in front of aiohttp, a ConnectionGuard)
    on a socket bound before the server starts: a port picked first and bound later can be taken
    in between (CI saw it). Returns the port."""
    sock = sock or listening_socket()
    gw = runner.app[GATEWAY]
    guard = ConnectionGuard(max_connections=4096, header_timeout=gw.settings.gateway.header_timeout)
    try:
        await GuardedSite(runner, sock, guard, wire=wire_factory(ExpressLane(gw))).start()
    except BaseException:
        sock.close()
        raise
    return int(sock.getsockname()[1])
