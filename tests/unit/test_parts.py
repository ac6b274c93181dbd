"""The owner's client of the other nodes of a spanning model (core/parts.py), against a node
played by a small aiohttp app: what it refuses before anything stops, and how a renewal ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sparkctl.core.parts import Parts, PeerLink
from sparkctl.errors import ModelStartFailedError, PeerUnavailableError


class FakeNode:
    def __init__(self) -> None:
        self.preflight: dict[str, Any] = {"node": "spark-b", "model": "big", "ready": True, "missing": []}
        self.reservation: tuple[int, dict[str, Any]] = (200, {"granted": True})
        self.asked: list[str] = []

    def app(self) -> web.Application:
        async def preflight(request: web.Request) -> web.Response:
            self.asked.append("preflight")
            return web.json_response(self.preflight)

        async def reserve(request: web.Request) -> web.Response:
            self.asked.append(f"reserve {request.query_string}")
            status, body = self.reservation
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/api/v1/models/{model}/preflight", preflight)
        app.router.add_post("/api/v1/reservations/{model}", reserve)
        return app


@pytest.fixture
async def node() -> AsyncIterator[tuple[FakeNode, PeerLink, aiohttp.ClientSession]]:
    fake = FakeNode()
    server = TestServer(fake.app())
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield fake, PeerLink("spark-b", str(server.make_url("")).rstrip("/"), "sk-key"), session
    await server.close()


async def test_a_node_whose_catalog_entry_differs_is_refused_before_anything_stops(
    node: tuple[FakeNode, PeerLink, aiohttp.ClientSession],
) -> None:
    fake, link, session = node
    parts = Parts("big", "spark-a", [link], session, fingerprint="aaaa")
    fake.preflight["catalog_sha256"] = "aaaa"
    await parts.check()  # the same entry: fine
    fake.preflight["catalog_sha256"] = "bbbb"
    with pytest.raises(ModelStartFailedError, match="its catalog entry on spark-b differs") as refused:
        await parts.check()
    assert "copy big's catalog file to spark-b" in (refused.value.hint or "")


async def test_a_node_that_lacks_something_is_named_with_the_fix(
    node: tuple[FakeNode, PeerLink, aiohttp.ClientSession],
) -> None:
    fake, link, session = node
    fake.preflight.update(
        ready=False, missing=["weights for org/big@main are not in /c: run sparkctl pull big"]
    )
    with pytest.raises(ModelStartFailedError, match="on spark-b, weights for org/big@main are not in /c"):
        await Parts("big", "spark-a", [link], session).check()


async def test_renewals_say_when_the_node_is_wanted_back_and_end_when_it_no_longer_holds(
    node: tuple[FakeNode, PeerLink, aiohttp.ClientSession],
) -> None:
    fake, link, session = node
    parts = Parts("big", "spark-a", [link], session, lease=3, poll=0.05)
    wanted: list[str] = []
    fake.reservation = (200, {"granted": True, "wanted_back": True})

    def heard(name: str) -> None:
        wanted.append(name)
        if len(wanted) == 2:  # the node's reservation ended meanwhile (its lease ran out)
            fake.reservation = (409, {"error": {"message": "This node holds no reservation any more."}})

    with pytest.raises(PeerUnavailableError, match="spark-b no longer holds itself for 'big'"):
        await parts.keep(heard)
    assert wanted == ["spark-b", "spark-b"]
    assert all("renew=1" in a for a in fake.asked)  # a renewal never makes a new reservation
