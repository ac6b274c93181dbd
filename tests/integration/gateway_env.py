"""The gateway's test stack, shared by the tests of the gateway and of its clients: emulated
models as real units on the sandboxed systemd, a supervisor, and the gateway in this process."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.apikeys.engine import read_engine_key
from sparkctl.catalog import load_catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.gateway.app import build_app
from sparkctl.sandbox.box import Box
from tests.conftest import box_settings
from tests.helpers import listening_socket, serve, write_model
from tests.integration.conftest import emulated

ECHO = str(Path(__file__).with_name("echo_engine.py"))


@dataclass
class Env:
    url: str
    admin: str
    user: str
    sup: Supervisor
    box: Box
    direct_url: str
    ports: dict[str, int]
    app: web.Application

    def client(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=key or self.user, max_retries=0, timeout=60
        )

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.user}"}

    async def unit_states(self) -> dict[str, str]:
        out = await asyncio.to_thread(
            self.box.systemctl, "list-units", "--all", "--plain", "--no-legend", "sparkctl-*.service"
        )
        return {line.split()[0]: line.split()[2] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture
async def env(box: Box, deploy: Any, tmp_path: Path) -> AsyncIterator[Env]:
    ports = {
        name: 28600 + i for i, name in enumerate(["chat", "slow", "ex-a", "ex-b", "echo", "tools", "crash"])
    }
    cat = tmp_path / "catalog"
    emulated(
        cat,
        "chat",
        ports["chat"],
        load_time=0.3,
        aliases=["chat-alias"],
        capabilities=["chat", "tools", "embeddings"],
        request={"defaults": {"max_tokens": 12}},
    )
    emulated(cat, "slow", ports["slow"], load_time=2.0)
    emulated(cat, "ex-a", ports["ex-a"], load_time=0.3, serve={"gpu": "exclusive"})
    emulated(cat, "ex-b", ports["ex-b"], load_time=0.3, serve={"gpu": "exclusive"})
    emulated(
        cat,
        "crash",
        ports["crash"],
        load_time=0.1,
        engine={"args": ["--load-time", "0.1", "--tokens-per-second", "20"]},
    )
    # The engine runs in a unit with PrivateTmp=: it must not live under /tmp, where a checkout may.
    echo = box.path / "echo_engine.py"
    shutil.copy(ECHO, echo)
    write_model(
        cat,
        "echo",
        engine={
            "kind": "openai",
            "runtime": "process",
            "image": None,
            "port": ports["echo"],
            "command": [sys.executable, str(echo), "--port", str(ports["echo"])],
            "ulimits": {},
        },
        aliases=["echo-alias"],
        capabilities=["chat", "embeddings", "audio"],  # it echoes any route back
    )
    write_model(cat, "off", status="disabled", disabled_reason="it hangs on load")
    settings = box_settings(
        box,
        gateway={
            "api_keys_file": str(tmp_path / "api-keys"),
            "max_body": "16m",
            "body_timeout": "1s",
            "cors_origins": ["http://localhost:3000", "vscode-webview://*"],
        },
        scheduler={
            "idle_timeout": "10m",
            "drain_timeout": "30s",
            "health_interval": "0.5s",
            "health_failures": 2,
        },
    )
    deploy(cat, settings)
    store = KeyStore()
    admin, user = store.add("ops", admin=True), store.add("app")
    store.save(tmp_path / "api-keys")
    catalog = load_catalog(settings, [cat])
    sup = Supervisor(catalog, settings)
    await sup.start()
    runner: web.AppRunner | None = None
    try:
        direct_sock = listening_socket()
        direct = int(direct_sock.getsockname()[1])
        keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys")  # reads the file: off the loop
        engine_key = read_engine_key(settings.runtime.engine_env)
        app = build_app(
            settings, catalog, sup, keys=keys, direct_ports={direct: "chat"}, engine_key=engine_key
        )
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        await serve(runner, direct_sock)
        port = await serve(runner)
        yield Env(f"http://127.0.0.1:{port}", admin, user, sup, box, f"http://127.0.0.1:{direct}", ports, app)
    finally:
        if runner is not None:
            await runner.cleanup()
        await sup.close()
