"""The peer side of a spanning model (#15), in process: the preflight an owner asks before
anything stops, and `POST/DELETE /api/v1/reservations/{model}`, which reach this node's own
scheduler through the supervisor's owner task (the status shows who holds the node). The
scheduler's rules themselves: test_reservations.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.catalog.span import fingerprint
from sparkctl.core.scheduler import Scheduler
from sparkctl.core.supervisor import Supervisor, model_info
from sparkctl.errors import ReservationError
from sparkctl.gateway.app import build_app
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.settings import Settings
from tests.helpers import write_model

SPAN = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a"}
PATH = "/api/v1/reservations/big"


@dataclass
class Peer:
    client: TestClient[Any, Any]
    admin: dict[str, str]
    user: dict[str, str]
    supervisor: Supervisor
    hf_cache: Path

    async def reserve(self, query: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        r = await self.client.post(f"{PATH}?{query}", headers=self.admin if headers is None else headers)
        return r.status, await r.json()

    async def reserved_by(self, model: str = "big") -> str | None:
        r = await self.client.get("/api/v1/status", headers=self.admin)
        held: str | None = next(m["reserved_by"] for m in (await r.json())["models"] if m["id"] == model)
        return held


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[Peer]:
    """Node spark-b, which runs the worker part of `big` (owned by spark-a), and a model of its own."""
    settings = Settings.model_validate(
        {
            "gateway": {"api_keys_file": str(tmp_path / "api-keys")},
            "runtime": {"hf_cache": str(tmp_path / "hf")},
            "cluster": {
                "node": "spark-b",
                "interface": "veth-b",
                "address": "10.77.0.2",
                "peers": [{"name": "spark-a", "url": "http://10.77.0.1:29301", "api_key_file": "/k"}],
            },
        }
    )
    write_model(tmp_path / "models", "big", serve=SPAN, engine={"command": ["vllm", "serve"]})
    write_model(tmp_path / "models", "small")
    write_model(tmp_path / "models", "proc", engine={"runtime": "process", "image": None, "port": 29370})
    catalog = load_catalog(settings, [tmp_path / "models"])
    store = KeyStore()
    admin, user = store.add("spark-a", admin=True), store.add("app")
    await asyncio.to_thread(store.save, tmp_path / "api-keys")
    keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys", interval=0.05)
    sup = Supervisor(catalog, settings)
    # No systemd here: nothing in these tests starts or stops a unit, so the scheduler runs
    # alone, with the supervisor's owner task applying the messages the routes post.
    infos = [model_info(m, settings.cluster) for m in catalog.enabled]
    assert [i.worker for i in infos] == [True, False, False]
    sup._scheduler = Scheduler(infos, sup._fx, memory_budget=0.94)
    owner = asyncio.create_task(sup._run())
    try:
        app = build_app(settings, catalog, sup, keys=keys)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield Peer(
                client,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {user}"},
                sup,
                tmp_path / "hf",
            )
    finally:
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
        await sup._fx.close()


async def test_the_owner_reserves_renews_and_releases_this_node(peer: Peer) -> None:
    assert await peer.reserved_by() is None
    status, body = await peer.reserve("holder=spark-a&lease=30")
    assert status == 200
    assert body == {
        "model": "big",
        "holder": "spark-a",
        "granted": True,
        "lease_s": 30.0,
        "wanted_back": False,
    }
    assert await peer.reserved_by() == "spark-a"
    status, body = await peer.reserve("holder=spark-a&lease=60")  # renewed
    assert status == 200 and body["granted"] is True
    r = await peer.client.delete(f"{PATH}?holder=spark-a", headers=peer.admin)
    assert r.status == 204 and await peer.reserved_by() is None
    r = await peer.client.delete(f"{PATH}?holder=spark-a", headers=peer.admin)  # twice: nothing held
    assert r.status == 204


async def test_a_local_request_for_the_worker_part_is_refused_while_local_models_are_not(peer: Peer) -> None:
    r = await peer.client.post(
        "/v1/chat/completions",
        json={"model": "big", "messages": [{"role": "user", "content": "hi"}]},
        headers={**peer.user, "Prefer": "wait=0"},
    )
    body = await r.json()
    assert r.status == 409 and body["error"]["code"] == "reservation_refused", body
    assert "served by the node that owns it" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "query", "status", "code", "says"),
    [
        (
            PATH,
            "holder=spark-c&lease=30",
            400,
            "bad_request",
            "must name a peer of this node (cluster.peers: spark-a)",
        ),
        (PATH, "holder=spark-b&lease=30", 400, "bad_request", "got 'spark-b'"),  # itself
        (PATH, "holder=spark-a", 400, "bad_request", "lease must be seconds from 1 to 600, got ''"),
        (PATH, "holder=spark-a&lease=601", 400, "bad_request", "got '601'"),
        (PATH, "holder=spark-a&lease=nan", 400, "bad_request", "got 'nan'"),
        (
            "/api/v1/reservations/small",
            "holder=spark-a&lease=30",
            409,
            "reservation_refused",
            "no worker part",
        ),
        ("/api/v1/reservations/nope", "holder=spark-a&lease=30", 404, "model_not_found", "nope"),
    ],
)
async def test_what_is_refused(peer: Peer, path: str, query: str, status: int, code: str, says: str) -> None:
    r = await peer.client.post(f"{path}?{query}", headers=peer.admin)
    body = await r.json()
    assert r.status == status and body["error"]["code"] == code and says in body["error"]["message"], body
    assert await peer.reserved_by() is None


async def test_only_admin_keys_reserve(peer: Peer) -> None:
    status, body = await peer.reserve("holder=spark-a&lease=30", headers=peer.user)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, _ = await peer.reserve("holder=spark-a&lease=30", headers={})
    assert status == 401 and await peer.reserved_by() is None


async def test_a_second_owner_of_the_model_is_refused(peer: Peer) -> None:
    """One node owns a model: while spark-a holds this node for `big`, no other holder can."""
    await peer.reserve("holder=spark-a&lease=30")
    # spark-a is the only peer configured, so the scheduler's own refusal is seen directly.
    with pytest.raises(ReservationError, match="reserved for 'big' by spark-a, not spark-z"):
        await peer.supervisor.reserve("big", "spark-z", 30)


async def test_the_preflight_names_what_is_missing_here_and_the_command_that_fixes_it(peer: Peer) -> None:
    async def ask(model: str) -> dict[str, Any]:
        r = await peer.client.get(f"/api/v1/models/{model}/preflight", headers=peer.admin)
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body

    before = await ask("big")
    assert (before["node"], before["model"], before["ready"]) == ("spark-b", "big", False)
    weights, image = before["missing"]
    assert weights == f"weights for org/model@main are not in {peer.hf_cache}: run sparkctl pull big"
    # (podman may be missing where the unit tests run: then the image cannot be checked, which
    # is missing too, and says so)
    assert "image localhost/sparkctl-emulator:latest" in image
    assert (await ask("proc"))["missing"] == [
        f"weights for org/model@main are not in {peer.hf_cache}: run sparkctl pull proc"
    ]
    await asyncio.to_thread(write_placeholder, peer.hf_cache, "org/model")
    proc = await ask("proc")
    assert proc == {"node": "spark-b", "model": "proc", "ready": True, "missing": [], "catalog_sha256": ANY}
    assert proc["catalog_sha256"] == fingerprint(peer.supervisor.catalog.models["proc"].spec)
    assert [m for m in (await ask("big"))["missing"] if "weights" in m] == []
    r = await peer.client.get("/api/v1/models/big/preflight", headers=peer.user)
    assert r.status == 403  # an admin key's question
