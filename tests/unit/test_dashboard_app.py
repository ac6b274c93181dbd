"""The dashboard's routes in the gateway (#17), in process: `/` → `/ui/`, the strict headers, the
key exchanged for an HttpOnly SameSite=Strict cookie that then opens the same doors the key does
(and no more), Origin checks on cookie-borne changes, and `auth = "none"` opening without a login.
The browser itself drives the real stack in tests/integration/test_dashboard.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.catalog import Catalog, load_catalog
from sparkctl.core.scheduler import Scheduler
from sparkctl.core.supervisor import Supervisor, model_info
from sparkctl.gateway.app import build_app
from sparkctl.gateway.ui.pages import CSP
from sparkctl.settings import Settings
from tests.helpers import write_model

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@dataclass
class Dash:
    client: TestClient[Any, Any]
    admin: str
    user: str
    keys_path: Path

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def sign_in(self, key: str) -> str:
        r = await self.client.post("/ui/api/session", json={"key": key}, headers={"Origin": self.origin})
        assert r.status == 200, await r.text()
        cookie = r.cookies["sparkctl_session"]
        return cookie.value


def _supervisor(catalog: Catalog, settings: Settings) -> Supervisor:
    """A supervisor whose scheduler runs without systemd: nothing here starts a model, and the
    pages only read its views."""
    sup = Supervisor(catalog, settings)
    sup._scheduler = Scheduler(
        [model_info(m) for m in catalog.enabled], sup._fx, memory_budget=0.9, total_memory=1 << 34
    )
    return sup


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Dash]:
    gateway: dict[str, Any] = {"api_keys_file": str(tmp_path / "api-keys")}
    settings = Settings.model_validate({"gateway": gateway})
    write_model(tmp_path / "models", "m-one", description=HOSTILE)
    write_model(tmp_path / "models", "m-off", status="disabled", disabled_reason="broken")
    catalog = load_catalog(settings, [tmp_path / "models"])
    store = KeyStore()
    admin, user = store.add("ops", admin=True), store.add("app")
    await asyncio.to_thread(store.save, tmp_path / "api-keys")
    keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys", interval=0.05)
    app = build_app(settings, catalog, _supervisor(catalog, settings), keys=keys)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Dash(client, admin, user, tmp_path / "api-keys")


async def test_the_root_redirects_to_the_page_which_holds_no_data_and_forbids_inline_script(
    dash: Dash,
) -> None:
    r = await dash.client.get("/", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"
    page = await dash.client.get("/ui/")
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.text()
    assert "<script>" not in html and " style=" not in html and "onclick" not in html
    assert "m-one" not in html  # no data in the page itself


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("app.js", "text/javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")],
)
async def test_assets_are_served_from_the_package_without_a_key(dash: Dash, name: str, ctype: str) -> None:
    r = await dash.client.get(f"/ui/assets/{name}")
    assert r.status == 200 and r.content_type == ctype
    assert r.headers["Content-Security-Policy"] == CSP


@pytest.mark.parametrize("name", ["index.html", "__init__.py", "..%2Fpages.py", "nope.js"])
async def test_nothing_else_in_the_package_is_served(dash: Dash, name: str) -> None:
    r = await dash.client.get(f"/ui/assets/{name}")
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"


async def test_a_key_is_exchanged_once_for_an_httponly_samesite_strict_cookie(dash: Dash) -> None:
    r = await dash.client.post("/ui/api/session", json={"key": dash.user}, headers={"Origin": dash.origin})
    assert r.status == 200
    assert await r.json() == {"auth": "required", "name": "app", "admin": False}
    header = r.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/" in header
    assert dash.user not in header  # the cookie is a token, not the key
    who = await dash.client.get("/ui/api/session")  # the client's cookie jar sends it
    assert await who.json() == {"auth": "required", "name": "app", "admin": False}
    models = await dash.client.get("/v1/models")
    assert models.status == 200 and {m["id"] for m in (await models.json())["data"]} == {"m-one", "m-off"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"key": "sk-spark-nope"}, "unauthorized"),
        ({"key": 3}, "bad_request"),
        ({}, "bad_request"),
        (["x"], "bad_request"),
    ],
)
async def test_a_bad_sign_in_sets_no_cookie(dash: Dash, body: Any, code: str) -> None:
    r = await dash.client.post("/ui/api/session", json=body, headers={"Origin": dash.origin})
    assert (await r.json())["error"]["code"] == code
    assert "Set-Cookie" not in r.headers
    assert (await dash.client.get("/ui/api/session")).status == 401


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null"])
async def test_signing_in_or_out_from_a_foreign_page_is_refused(dash: Dash, origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    r = await dash.client.post("/ui/api/session", json={"key": dash.admin}, headers=headers)
    assert r.status == 403 and "Set-Cookie" not in r.headers
    await dash.sign_in(dash.admin)
    out = await dash.client.delete("/ui/api/session", headers=headers)
    assert out.status == 403
    assert (await dash.client.get("/ui/api/session")).status == 200  # still signed in


async def test_a_cookie_borne_change_needs_the_pages_origin_and_a_read_does_not(dash: Dash) -> None:
    await dash.sign_in(dash.admin)
    assert (await dash.client.get("/api/v1/status")).status == 200
    foreign = await dash.client.post("/api/v1/models/m-one/stop", headers={"Origin": "http://evil.example"})
    assert foreign.status == 403 and (await foreign.json())["error"]["code"] == "forbidden"
    bare = await dash.client.post("/api/v1/models/m-one/stop")
    assert bare.status == 403
    chat = await dash.client.post(
        "/v1/chat/completions",
        json={"model": "m-one", "messages": []},
        headers={"Origin": "http://evil.example"},
    )
    assert chat.status == 403
    # a key in the header needs no Origin: it is not something a browser adds by itself
    keyed = await dash.client.post(
        "/api/v1/models/m-off/stop", headers={"Authorization": f"Bearer {dash.admin}"}
    )
    assert keyed.status == 400  # disabled: got past the door


async def test_a_user_keys_session_opens_no_more_than_the_key(dash: Dash) -> None:
    await dash.sign_in(dash.user)
    r = await dash.client.get("/api/v1/status")
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    r = await dash.client.post("/api/v1/models/m-one/start", headers={"Origin": dash.origin})
    assert r.status == 403


async def test_a_presented_key_wins_over_the_cookie(dash: Dash) -> None:
    await dash.sign_in(dash.admin)
    r = await dash.client.get("/api/v1/status", headers={"Authorization": "Bearer sk-spark-wrong"})
    assert r.status == 401


async def test_revoking_the_key_ends_its_open_feed_and_signs_its_sessions_out(dash: Dash) -> None:
    await dash.sign_in(dash.user)
    assert (await dash.client.get("/ui/api/session")).status == 200
    async with dash.client.get("/ui/api/live") as feed:
        assert (await _first_event(feed))["event"] == "status"
        await asyncio.to_thread(_revoke, dash.keys_path, "app")
        while (event := await _first_event(feed))["event"] == "status":
            pass  # snapshots until the key file's watcher notices (interval 0.05 s)
        assert event["event"] == "error" and event["data"]["error"]["code"] == "unauthorized"
    r = await dash.client.get("/ui/api/session")
    assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="sparkctl"'


def _revoke(path: Path, name: str) -> None:
    store = KeyStore.load(path)
    store.revoke(name)
    store.save(path)


async def test_signing_out_ends_the_session(dash: Dash) -> None:
    token = await dash.sign_in(dash.admin)
    out = await dash.client.delete("/ui/api/session", headers={"Origin": dash.origin})
    assert out.status == 204
    dash.client.session.cookie_jar.update_cookies({"sparkctl_session": token})  # kept by an attacker
    assert (await dash.client.get("/ui/api/session")).status == 401


async def test_the_live_feed_sends_a_snapshot_to_any_key(dash: Dash) -> None:
    await dash.sign_in(dash.user)
    async with dash.client.get("/ui/api/live") as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        event = await _first_event(r)
    assert event["event"] == "status"
    snap = event["data"]
    (model,) = snap["models"]
    assert model["id"] == "m-one" and model["state"] == "stopped" and model["description"] == HOSTILE
    assert {"in_flight", "waiting", "idle_stop_at", "eta_seconds", "last_error", "requests_per_s"} <= set(
        model
    )
    assert snap["disabled"] == [{"id": "m-off", "description": "a test model", "disabled_reason": "broken"}]
    assert snap["nodes"][0]["memory_total"] > 0


async def test_the_live_feed_and_logs_ask_a_key(dash: Dash) -> None:
    assert (await dash.client.get("/ui/api/live")).status == 401
    assert (await dash.client.get("/ui/api/logs/m-one")).status == 401
    await dash.sign_in(dash.user)
    missing = await dash.client.get("/ui/api/logs/no-such-model")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "model_not_found"


async def test_auth_none_on_loopback_opens_without_a_login(tmp_path: Path) -> None:
    settings = Settings.model_validate({"gateway": {"auth": "none"}})
    write_model(tmp_path / "models", "m-one")
    catalog = load_catalog(settings, [tmp_path / "models"])
    app = build_app(settings, catalog, _supervisor(catalog, settings))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        who = await client.get("/ui/api/session")
        assert await who.json() == {"auth": "none", "name": None, "admin": True}
        # and a foreign page still cannot drive it (the middleware's rules for auth = "none")
        r = await client.post("/api/v1/models/m-one/stop", headers={"Origin": "http://evil.example"})
        assert r.status == 403


async def _first_event(response: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    while True:
        line = (await asyncio.wait_for(response.content.readline(), 5)).decode().rstrip("\n")
        if not line and fields:
            return fields
        name, _, value = line.partition(": ")
        fields[name] = json.loads(value) if name == "data" else value


def test_the_script_never_turns_text_into_markup() -> None:
    """The page's one rule, kept by reading: daemon-provided text only ever becomes textContent."""
    from importlib import resources

    script = resources.files("sparkctl.gateway.ui").joinpath("assets", "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in script, sink


async def test_in_a_cluster_the_page_shows_every_nodes_models_and_each_node(tmp_path: Path) -> None:
    """#15/#17: the other nodes' models, as they list them, beside this node's; a spanning model
    this node runs a worker of is shown once, as its owner lists it; each node, answering or not."""
    from yarl import URL

    from sparkctl.gateway.context import GATEWAY
    from sparkctl.gateway.peers import Peer
    from sparkctl.gateway.ui.live import Live, snapshot

    cluster = {
        "node": "spark-b",
        "interface": "qsfp0",
        "address": "10.77.0.2",
        "peers": [{"name": "spark-a", "url": "http://10.77.0.1:8009", "api_key_file": "/k"}],
    }
    settings = Settings.model_validate({"cluster": cluster})
    write_model(tmp_path / "models", "b-own")
    span = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a", "multinode": "native"}
    write_model(tmp_path / "models", "span", serve=span)
    catalog = load_catalog(settings, [tmp_path / "models"])
    peer = Peer("spark-a", URL("http://10.77.0.1:8009"), "sk-spark-peer-key")
    app = build_app(settings, catalog, _supervisor(catalog, settings), keys=KeyStore(), peers=[peer])  # type: ignore[arg-type]
    gw = app[GATEWAY]
    assert gw.peers is not None
    state = next(iter(gw.peers))
    state.models = [
        {"id": "a-own", "state": "ready", "description": HOSTILE, "memory_bytes": 5, "load_time_s": 2.5},
        {"id": "span", "state": "starting", "description": "spans both"},
    ]
    state.listed = state.up = True
    snap = await snapshot(gw, Live())
    shown = {m["id"]: (m["node"], m["state"], m.get("remote", False)) for m in snap["models"]}
    assert shown == {
        "b-own": ("spark-b", "stopped", False),
        "a-own": ("spark-a", "ready", True),
        "span": ("spark-a", "starting", True),  # the owner's view, not the worker part's here
    }
    assert [(n["name"], n.get("remote", False)) for n in snap["nodes"]] == [
        ("spark-b", False),
        ("spark-a", True),
    ]
    assert snap["nodes"][1]["available"] is True
    state.up = False
    state.error = "connection refused"
    snap = await snapshot(gw, Live())
    assert snap["nodes"][1] == {
        "name": "spark-a",
        "remote": True,
        "available": False,
        "error": "connection refused",
    }
    assert {m["id"]: m["state"] for m in snap["models"]}["a-own"] == "unavailable"
