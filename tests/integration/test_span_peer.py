"""The peer side of a spanning model (#15) on the real sandboxed systemd: a node that runs the
worker part of a model another node owns. First the test plays the owner, calling the supervisor
as the admin routes do: its own tenant drains and stops before the grant, the worker part starts
at the owner's word, a local request waits while the node is held, and the release stops the
worker before the local model starts again — systemd's own view, followed over D-Bus and sampled,
never shows the two units busy at once. Then the owner's own client (core/parts.py) does the
same over the peer's real admin API: preflight, reserve, start, renew, release."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.core.parts import Parts, PeerLink
from sparkctl.core.states import ModelState
from sparkctl.core.supervisor import Supervisor
from sparkctl.core.systemd import Systemd
from sparkctl.core.weights import repo_dir
from sparkctl.errors import ModelStartFailedError, PeerUnavailableError
from sparkctl.gateway.app import build_app
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.units.render import render
from sparkctl.units.sync import sync
from tests.conftest import box_settings
from tests.integration.conftest import emulated, reach
from tests.integration.test_supervisor import UnitMonitor

LOCAL_PORT = 29380
WORKER_PORT = 29381  # never listened on: a worker part takes no requests
GATEWAY_PORT = 29384  # the peer's admin API, as the owner reaches it
UNITS = {"sparkctl-local.service", "sparkctl-span.service"}


@pytest.fixture
async def peer(box: Box, tmp_path: Path) -> AsyncIterator[Supervisor]:
    """This box as spark-b: its own model `local`, and the worker part of `span` (owned by
    spark-a, which never answers here: the worker keeps trying to join its head, as a worker
    started before its head does)."""
    settings = box_settings(
        box,
        scheduler={"idle_timeout": "10m", "drain_timeout": "30s"},
        cluster={
            "node": "spark-b",
            "interface": "lo",
            "address": "127.0.0.2",
            "master_port": 29382,
            "peers": [{"name": "spark-a", "url": "http://127.0.0.3:29383", "api_key_file": "/k"}],
        },
    )
    emulated(tmp_path, "local", LOCAL_PORT, serve={"gpu": "exclusive"})
    emulated(
        tmp_path,
        "span",
        WORKER_PORT,
        serve={"nodes": 2, "multinode": "native", "gpu": "exclusive", "owner": "spark-a"},
        source={"hf_repo": "org/span"},  # not pulled here until a test says so
    )
    span_weights = repo_dir(settings.runtime.hf_cache, "org/span")
    shutil.rmtree(span_weights, ignore_errors=True)  # the box's cache outlives a test: start without
    catalog = load_catalog(settings, [tmp_path])
    files = render(catalog, settings)
    dirs = {"quadlet": box.quadlet_dir, "unit": box.unit_dir}
    sync(files, dirs)
    box.daemon_reload()
    sup = Supervisor(catalog, settings)
    await sup.start()
    try:
        yield sup
    finally:
        await sup.close()
        box.systemctl("stop", *UNITS, check=False)
        for f in files:
            (dirs[f.destination] / f.name).unlink(missing_ok=True)
        box.daemon_reload()
        box.systemctl("reset-failed", check=False)
        shutil.rmtree(span_weights, ignore_errors=True)


async def test_a_reservation_drains_the_tenant_holds_the_node_and_gives_it_back(
    box: Box, peer: Supervisor
) -> None:
    sup = peer
    await asyncio.to_thread(write_placeholder, sup.settings.runtime.hf_cache, "org/span")  # pulled here
    events: list[tuple[str, ModelState]] = []
    sup.subscribe(lambda model, state: events.append((model, state)))
    monitor = UnitMonitor(UNITS)
    watcher = await Systemd.connect(box.bus_address, on_event=monitor)
    sampling = True

    async def sample() -> None:  # systemd's state read directly too, not only its signals
        while sampling:
            units = await watcher.list_units(sorted(UNITS))
            busy = [u for u, active, _ in units if active in ("active", "activating", "deactivating")]
            monitor.samples += 1
            if len(busy) > 1:
                monitor.violations.append(dict.fromkeys(busy, "sampled"))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        lease = await asyncio.wait_for(sup.acquire("local"), 20)  # the node's own tenant, serving
        assert await sup.reserve("span", "spark-a", 30) is False  # behind the request in flight
        await reach(sup, local=ModelState.DRAINING)
        waiting = asyncio.create_task(sup.acquire("local"))  # a local request after the reservation
        await asyncio.sleep(0.3)
        assert not waiting.done()
        lease.release()  # the drain ends: `local` stops, then the node is granted
        await reach(sup, local=ModelState.STOPPED)
        for _ in range(50):
            if await sup.reserve("span", "spark-a", 30):  # the owner renews, and learns of the grant
                break
            await asyncio.sleep(0.1)
        assert sup.view("span").reserved_by == "spark-a"
        # The grant: the worker part's wait (queued) ends, held but not running (stopped).
        held = events.index(("span", ModelState.STOPPED), events.index(("span", ModelState.QUEUED)))

        await sup.start_model("span")  # the owner starts its worker part here
        await reach(sup, span=ModelState.READY)
        assert box.systemctl("is-active", "sparkctl-span.service", check=False).stdout.strip() == "active"
        await asyncio.sleep(0.5)
        assert not waiting.done() and sup.view("local").state is not ModelState.STARTING

        # While the node is held, `local` never even began a start (systemd's Conflicts= would
        # stop it again, so the unit monitor alone could not tell).
        assert ("local", ModelState.STARTING) not in events[held:]
        await sup.release_reservation("span", "spark-a")  # the worker stops, then `local` starts
        second = await asyncio.wait_for(waiting, 20)
        second.release()
        assert box.systemctl("is-active", "sparkctl-span.service", check=False).stdout.strip() != "active"
    finally:
        sampling = False
        await sampler
        await watcher.close()
    assert monitor.samples > 20
    assert monitor.violations == []


async def test_the_owners_client_checks_reserves_starts_renews_and_releases_the_peer(
    peer: Supervisor, tmp_path: Path
) -> None:
    store = KeyStore()
    key = store.add("spark-a", admin=True)  # the owner's admin key of this peer
    await asyncio.to_thread(store.save, tmp_path / "api-keys")
    keys = await asyncio.to_thread(KeyFile, tmp_path / "api-keys", interval=0.05)
    app = build_app(peer.settings, peer.catalog, peer, keys=keys)
    hf_cache = peer.settings.runtime.hf_cache
    async with (
        TestServer(app, host="127.0.0.1", port=GATEWAY_PORT) as server,
        aiohttp.ClientSession() as session,
    ):
        link = PeerLink("spark-b", str(server.make_url("")).rstrip("/"), key)
        parts = Parts("span", "spark-a", [link], session, lease=3, poll=0.2)
        with pytest.raises(ModelStartFailedError) as lacking:  # before anything stops
            await parts.check()
        assert lacking.value.message == (
            f"The model 'span' cannot start: on spark-b, weights for org/span@main are not in {hf_cache}: "
            "run sparkctl pull span."
        )
        await asyncio.to_thread(write_placeholder, hf_cache, "org/span")
        await parts.check()

        lease = await asyncio.wait_for(peer.acquire("local"), 20)  # the peer's own tenant, serving
        reserving = asyncio.create_task(parts.reserve(within=20))
        await reach(peer, local=ModelState.DRAINING)
        assert not reserving.done()
        lease.release()
        await asyncio.wait_for(reserving, 20)
        assert peer.view("span").reserved_by == "spark-a" and peer.view("local").state is ModelState.STOPPED

        await parts.start_workers()
        await reach(peer, span=ModelState.READY)
        keeper = asyncio.create_task(parts.keep())
        await asyncio.sleep(4)  # past the 3 s lease: the renewals keep the node held
        assert peer.view("span").reserved_by == "spark-a" and not keeper.done()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        assert await parts.release() == []
        await reach(peer, span=ModelState.STOPPED)
        assert peer.view("span").reserved_by is None
    # The peer's gateway is gone: the owner is told so at once, naming it.
    async with aiohttp.ClientSession() as session:
        parts = Parts("span", "spark-a", [link], session, timeout=2)
        with pytest.raises(PeerUnavailableError, match="spark-b does not answer"):
            await parts.check()
        assert await parts.release() == ["spark-b"]


async def test_a_restarted_peer_daemon_holds_the_node_again_for_the_worker_it_adopts(
    peer: Supervisor,
) -> None:
    hf_cache = peer.settings.runtime.hf_cache
    await asyncio.to_thread(write_placeholder, hf_cache, "org/span")
    assert await peer.reserve("span", "spark-a", 60) is True  # a free node: held at once
    await peer.start_model("span")
    await reach(peer, span=ModelState.READY)
    await peer.close()  # the daemon stops (the worker part runs on: systemd keeps it)

    again = Supervisor(peer.catalog, peer.settings)
    await again.start()
    try:
        assert again.view("span").state is ModelState.READY  # adopted, not restarted
        assert again.view("span").reserved_by == "spark-a"  # and the node held for it again
        waiting = asyncio.create_task(again.acquire("local"))
        await asyncio.sleep(0.5)
        assert not waiting.done() and again.view("span").state is ModelState.READY
        assert await again.reserve("span", "spark-a", 60) is True  # the owner's renewal finds it held
        await again.release_reservation("span", "spark-a")
        (await asyncio.wait_for(waiting, 20)).release()
    finally:
        await again.close()
