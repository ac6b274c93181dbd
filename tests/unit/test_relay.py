"""The relay to a cluster peer (#15), against a peer that speaks a sparkctl gateway's HTTP: the
listing with `node`, auth at the entry node first, the peer's key upstream, body and stream
unchanged, the peer's errors as they came, 503 `peer_unavailable` at once for a peer that does not
answer, no second hop, disconnects carried to the peer. (The real thing, two daemons on two
sandboxed systemds: tests/integration/test_cluster.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.gateway.app import build_app
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.peers import RELAYED, Peer
from sparkctl.settings import Settings
from tests.helpers import serve, write_model

PEER_PORT = 29250  # (this session's range: 29200-29299)
PEER_KEY = "sk-spark-peer-admin-key"
CHUNKS = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]


@dataclass
class FakePeer:
    """Node "b": what its gateway answers, and what it was sent."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    slow_listing: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/remote-m/chat/completions", self.chat)
        return app

    def _record(self, request: web.Request, body: bytes = b"") -> None:
        self.seen.append({"path": request.path_qs, "headers": request.headers.copy(), "body": body})

    async def models(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.slow_listing:
            await asyncio.sleep(5)  # past the poll timeout: as a restarting daemon answers
        if request.headers.get("Authorization") != f"Bearer {PEER_KEY}":
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "remote-m", "object": "model", "state": "ready", "node": "b", "aliases": ["rm"]},
                    # this node's own model, as b would list it: not b's to offer
                    {"id": "m-one", "object": "model", "state": "stopped", "node": "a"},
                    {"id": "bad/../name", "object": "model", "state": "ready", "node": "b"},
                ],
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._record(request, body)
        data = json.loads(body)
        if data.get("stall"):  # never a byte of an answer: as a peer whose cable was pulled
            await asyncio.sleep(60)
        if data.get("max_tokens") == -1:
            envelope = {"error": {"message": "max_tokens must be >= 1", "type": "x", "code": "bad_request"}}
            return web.json_response(envelope, status=400, headers={"X-Peer": "b"})
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Peer": "b"})
        await out.prepare(request)
        try:
            for chunk in CHUNKS[:-1]:
                await out.write(chunk)
                await asyncio.sleep(0.05)
            if data.get("hang"):
                await asyncio.sleep(60)
            await out.write(CHUNKS[-1])
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        await out.write_eof()
        return out


@dataclass
class Cluster:
    client: aiohttp.ClientSession
    peer: FakePeer
    peer_server: TestServer
    user: str
    app: web.Application

    def headers(self, **more: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user}", **more}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    peer = FakePeer()
    peer_server = TestServer(peer.app(), host="127.0.0.1", port=PEER_PORT)
    await peer_server.start_server()
    store = KeyStore()
    user = store.add("app")
    store.save(tmp_path / "api-keys")
    settings = Settings.model_validate(
        {
            "gateway": {"api_keys_file": str(tmp_path / "api-keys")},
            "cluster": {
                "node": "a",
                "poll_interval": "200ms",
                "connect_timeout": "500ms",
                "poll_timeout": "1s",
                "peers": [{"name": "b", "url": f"http://127.0.0.1:{PEER_PORT}", "api_key_file": "/unused"}],
            },
        }
    )
    # disabled: this node's supervisor is never started here (no systemd); a disabled model is
    # listed and refused without it
    write_model(tmp_path / "models", "m-one", status="disabled", disabled_reason="not here")
    catalog = load_catalog(settings, [tmp_path / "models"])
    keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys")
    peers = [Peer("b", URL(f"http://127.0.0.1:{PEER_PORT}"), PEER_KEY)]
    app = build_app(settings, catalog, Supervisor(catalog, settings), keys=keys, peers=peers)
    # served as the daemon serves it: the wire in front, which hands a peer's request to aiohttp
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    port = await serve(runner)
    client = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    try:
        peers_of_a = app[GATEWAY].peers
        assert peers_of_a is not None
        await _until(lambda: peers_of_a.states["b"].up)
        yield Cluster(client, peer, peer_server, user, app)
    finally:
        await client.close()
        await runner.cleanup()
        await peer_server.close()


async def _until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _models(c: Cluster, **headers: str) -> dict[str, dict[str, Any]]:
    r = await c.client.get("/v1/models", headers=c.headers(**headers))
    assert r.status == 200
    return {m["id"]: m for m in (await r.json())["data"]}


async def test_the_listing_is_the_clusters_with_each_models_node(cluster: Cluster) -> None:
    models = await _models(cluster)
    assert set(models) == {"m-one", "remote-m"}  # b's listing of a's model and a bad name: not b's
    assert models["m-one"]["node"] == "a" and models["m-one"]["available"] is True
    assert models["remote-m"]["node"] == "b" and models["remote-m"]["available"] is True
    assert models["remote-m"]["state"] == "ready"
    poll = cluster.peer.seen[0]["headers"]
    assert poll["Authorization"] == f"Bearer {PEER_KEY}" and poll[RELAYED] == "a"
    # a peer asking (with the marker) gets this node's own models only
    assert set(await _models(cluster, **{RELAYED: "b"})) == {"m-one"}
    r = await cluster.client.get("/v1/models/rm", headers=cluster.headers())
    assert r.status == 200 and (await r.json())["node"] == "b"


async def test_a_request_for_a_peers_model_streams_through_unchanged(cluster: Cluster) -> None:
    body = b'{"model":"rm","stream":true,  "messages":[{"role":"user","content":"h\\u00e9"}]}'
    r = await cluster.client.post(
        "/v1/chat/completions?x=%23", data=body, headers=cluster.headers(**{"X-Request-Id": "req-1"})
    )
    assert r.status == 200 and r.headers["X-Peer"] == "b"
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in r.content.iter_any()]
    assert b"".join(chunks) == b"".join(CHUNKS)
    sent = cluster.peer.seen[-1]
    assert sent["path"] == "/v1/chat/completions?x=%23" and sent["body"] == body  # the alias too
    assert sent["headers"]["Authorization"] == f"Bearer {PEER_KEY}"  # the peer's key, not the client's
    assert sent["headers"][RELAYED] == "a" and sent["headers"]["X-Request-Id"] == "req-1"
    # (/metrics would ask this node's supervisor, never started here: the counter itself)
    (family,) = cluster.app[GATEWAY].metrics.relays.collect()
    counted = {
        (s.labels["node"], s.labels["model"], s.labels["status"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counted[("b", "remote-m", "200")] == 1.0


async def test_the_path_form_and_the_peers_errors_pass_through(cluster: Cluster) -> None:
    r = await cluster.client.post(
        "/v1/remote-m/chat/completions", json={"max_tokens": -1}, headers=cluster.headers()
    )
    assert r.status == 400 and r.headers["X-Peer"] == "b"
    assert (await r.json())["error"] == {
        "message": "max_tokens must be >= 1",
        "type": "x",
        "code": "bad_request",
    }
    assert cluster.peer.seen[-1]["path"] == "/v1/remote-m/chat/completions"


async def test_auth_is_checked_at_the_entry_node_before_anything(cluster: Cluster) -> None:
    before = len(cluster.peer.seen)
    for headers in ({}, {"Authorization": f"Bearer {PEER_KEY}"}):  # the peer's key is not a key here
        r = await cluster.client.post("/v1/chat/completions", json={"model": "remote-m"}, headers=headers)
        assert r.status == 401
    assert len([s for s in cluster.peer.seen[before:] if s["path"] != "/v1/models"]) == 0


async def test_a_relayed_request_is_never_relayed_again(cluster: Cluster) -> None:
    before = len(cluster.peer.seen)
    r = await cluster.client.post(
        "/v1/chat/completions", json={"model": "remote-m"}, headers=cluster.headers(**{RELAYED: "c"})
    )
    assert r.status == 404 and (await r.json())["error"]["code"] == "model_not_found"
    assert all(s["path"] == "/v1/models" for s in cluster.peer.seen[before:])


async def test_an_unknown_model_is_404_once_the_peers_were_asked(cluster: Cluster) -> None:
    await asyncio.sleep(1.0)  # the on-demand refresh is rate-limited: let the window pass
    before = len([s for s in cluster.peer.seen if s["path"] == "/v1/models"])
    r = await cluster.client.post("/v1/chat/completions", json={"model": "nope"}, headers=cluster.headers())
    assert r.status == 404 and (await r.json())["error"]["code"] == "model_not_found"
    assert len([s for s in cluster.peer.seen if s["path"] == "/v1/models"]) > before  # asked on demand


async def test_a_peer_that_does_not_answer_is_503_at_once_and_nothing_local_waits(cluster: Cluster) -> None:
    await cluster.peer_server.close()
    t0 = time.monotonic()
    r = await cluster.client.post(
        "/v1/chat/completions", json={"model": "remote-m"}, headers=cluster.headers()
    )
    assert r.status == 503 and time.monotonic() - t0 < 1.5
    error = (await r.json())["error"]
    assert error["code"] == "peer_unavailable" and "'b'" in error["message"], error
    assert "Retry-After" in r.headers
    peers = cluster.app[GATEWAY].peers
    assert peers is not None
    await _until(lambda: not peers.states["b"].up)
    models = await _models(cluster)
    assert models["remote-m"]["state"] == "unavailable" and models["remote-m"]["available"] is False
    assert models["m-one"]["available"] is True
    r = await cluster.client.get("/v1/models/m-one", headers=cluster.headers())  # local: unaffected
    assert r.status == 200
    # known down: refused without even trying
    t0 = time.monotonic()
    r = await cluster.client.post("/v1/chat/completions", json={"model": "rm"}, headers=cluster.headers())
    assert r.status == 503 and time.monotonic() - t0 < 0.5
    status = await cluster.client.get("/api/v1/status", headers=cluster.headers())
    assert status.status == 403  # a user key; the admin view is tested with the daemon


async def test_a_client_that_leaves_mid_stream_ends_the_peers_request(cluster: Cluster) -> None:
    r = await cluster.client.post(
        "/v1/chat/completions",
        json={"model": "remote-m", "stream": True, "hang": True},
        headers=cluster.headers(),
    )
    assert await r.content.readuntil(b"\n\n") == CHUNKS[0]
    r.close()  # the client goes away
    await asyncio.wait_for(cluster.peer.cancelled.wait(), 5)
    # counted as the client's leaving (499), not as the peer's failure
    relays = cluster.app[GATEWAY].metrics.relays

    def counted() -> dict[str, float]:
        return {
            s.labels["status"]: s.value
            for m in relays.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }

    for _ in range(100):
        if counted():
            break
        await asyncio.sleep(0.02)
    assert counted() == {"499": 1.0}


async def test_a_peer_found_down_mid_stream_ends_the_stream_with_the_error(cluster: Cluster) -> None:
    r = await cluster.client.post(
        "/v1/chat/completions",
        json={"model": "remote-m", "stream": True, "hang": True},
        headers=cluster.headers(),
    )
    assert await r.content.readuntil(b"\n\n") == CHUNKS[0]
    gw = cluster.app[GATEWAY]
    assert gw.peers is not None
    # as a poll that finds no one there does (the link or the host gone)
    gw.peers._down(gw.peers.states["b"], "no route to host", unreachable=True)
    rest = await asyncio.wait_for(r.content.read(), 5)
    assert b'"code": "peer_unavailable"' in rest or b'"code":"peer_unavailable"' in rest, rest


async def test_a_slow_peer_is_listed_unavailable_but_still_gets_requests(cluster: Cluster) -> None:
    cluster.peer.slow_listing = True
    peers = cluster.app[GATEWAY].peers
    assert peers is not None
    await _until(lambda: not peers.states["b"].up, within=5)
    state = peers.states["b"]
    assert state.error == "timed out" and not state.unreachable  # it accepted: someone is there
    assert (await _models(cluster))["remote-m"]["state"] == "unavailable"
    r = await cluster.client.post(
        "/v1/chat/completions", json={"model": "remote-m", "stream": True}, headers=cluster.headers()
    )
    assert r.status == 200 and await r.read() == b"".join(CHUNKS)  # tried, and served


async def test_a_request_the_peer_never_answers_ends_once_the_peer_is_found_unreachable(
    cluster: Cluster,
) -> None:
    peers = cluster.app[GATEWAY].peers
    assert peers is not None
    asking = asyncio.ensure_future(
        cluster.client.post(
            "/v1/chat/completions", json={"model": "remote-m", "stall": True}, headers=cluster.headers()
        )
    )
    await _until(lambda: len(peers.states["b"].relays) == 1)  # sent, no answer
    peers._down(peers.states["b"], "no route to host", unreachable=True)  # as a poll finds it
    r = await asyncio.wait_for(asking, 5)
    assert r.status == 503 and (await r.json())["error"]["code"] == "peer_unavailable"
    assert not peers.states["b"].relays


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a raw connection: status, headers (lower-case), body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        return int(lines[0].split()[1]), headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readexactly(2)
    return int(lines[0].split()[1]), headers, body


async def test_a_peers_request_pipelined_between_local_ones_is_answered_in_turn(cluster: Cluster) -> None:
    """The wire serves this node's own models itself and hands a peer's model's request, with
    the rest of its connection, to aiohttp's path (the relay): pipelined in one write, every
    answer comes in order and the peer gets the body it was sent, byte for byte."""
    port = URL(str(cluster.client._base_url)).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    def post(body: bytes) -> bytes:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {cluster.user}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    local = b'{"model":"m-one","messages":[{"role":"user","content":"x"}]}'
    remote = b'{"model":"rm","stream":true,"messages":[{"role":"user","content":"\\u00e9 y"}]}'
    listing = f"GET /v1/models HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {cluster.user}\r\n\r\n".encode()
    writer.write(post(local) + post(remote) + post(local) + post(remote) + listing)
    first = await _response(reader)
    assert first[0] >= 400 and b"m-one" in first[2]  # disabled here: refused by this node itself
    assert "server" not in first[1]  # off the wire (express.py): a node with peers serves its own so
    status, headers, body = await _response(reader)
    assert status == 200 and headers.get("x-peer") == "b" and body == b"".join(CHUNKS), (
        status,
        headers,
        body,
    )
    again = await _response(reader)
    assert again[1]["server"].startswith("Python")  # aiohttp's now: the connection is its from the peer's on
    assert (
        again[0] == first[0]
        and json.loads(again[2])["error"]["code"] == json.loads(first[2])["error"]["code"]
    )
    status, _, body = await _response(reader)
    assert status == 200 and body == b"".join(CHUNKS)
    status, _, body = await _response(reader)
    assert status == 200 and {m["id"] for m in json.loads(body)["data"]} == {"m-one", "remote-m"}
    assert [s["body"] for s in cluster.peer.seen if s["path"].startswith("/v1/chat")] == [remote, remote]
    writer.close()
