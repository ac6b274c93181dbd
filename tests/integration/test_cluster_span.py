"""A model that spans two sandboxed Sparks, started, served, gated and stopped by their daemons
(#15): each node a real systemd in its own network namespace, the two joined by a veth pair that
stands for the QSFP link (10.77.1.0/24, inside the namespaces this test makes), each with its own
installed sparkctl daemon and an exclusive model of its own; `span` is owned by spark-a, which
runs its head, and spark-b runs its worker (the emulator's multi-node mode, vLLM's native form).

Systemd's own view of every model unit on both nodes is followed over each node's D-Bus and
sampled throughout: no instant on either node may have two tenants.

Covered: the model listed by both nodes as the owner's; a node missing the weights fails the
request at once, naming it and the fix, with nothing stopped on either node; a request at either
node evicts both tenants and is served (at the worker node, relayed to the owner); a local request
at the worker node gets its node back (the owner drains its model, as for a local swap);
concurrent requests for local and spanning models from both nodes; a worker killed mid-stream;
the owner's daemon restarted (it adopts the head and keeps the worker's node); the worker node's
daemon restarted (it holds its node again for the owner); a peer unreachable
(the model stops with a clear error, the node it could not release frees itself when its
reservation runs out). Then three Sparks behind a switch, one model across all three."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkctl.core.systemd import Systemd
from sparkctl.core.weights import repo_dir
from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox import cluster as sandbox_cluster
from sparkctl.sandbox.cluster import Cluster, Node
from sparkctl.sandbox.weights import write_placeholder
from tests.conftest import _unavailable
from tests.integration.conftest import emulated
from tests.integration.test_supervisor import UnitMonitor

PORT = 29251  # each node's gateway, on its loopback and on the link
SOLO_PORT = 29260  # each node's own model
SPAN_PORT = 29261  # the head's engine, on spark-a
LEASE = 15  # seconds: cluster.reservation_lease; a lost owner frees a node within it, and a
# restarting daemon (its grace for connections in flight included) renews well within it
CLIENT = str(Path(__file__).with_name("cluster_client.py"))


def _models(node: Node) -> None:
    solo = f"{node.name.removeprefix('spark-')}-solo"
    emulated(
        node.catalog,
        solo,
        SOLO_PORT,
        serve={"gpu": "exclusive"},
        # Tiny shares: the memory gate (the host's MemAvailable) never holds a start up here.
        engine={"args": ["--load-time", "0.3", "--tokens-per-second", "40"], "gpu_memory_utilization": 0.02},
    )
    emulated(
        node.catalog,
        "span",
        SPAN_PORT,
        source={"hf_repo": "org/span"},
        serve={
            "nodes": 2,
            "multinode": "native",
            "gpu": "exclusive",
            "owner": "spark-a",
            "start_timeout": "60s",
        },
        engine={
            "args": ["--load-time", "0.5", "--tokens-per-second", "40", "--heartbeat-timeout", "2"],
            "gpu_memory_utilization": 0.02,
        },
    )
    write_placeholder(node.hf_cache, "org/model")
    write_placeholder(node.hf_cache, "org/span")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    made = sandbox_cluster.up(
        ("spark-a", "spark-b"),
        boxes=f"w{os.getpid()}",
        port=PORT,
        models=_models,
        prefix="10.77.1",
        extra=f'master_port = 29262\nreservation_lease = "{LEASE}s"',
        # Engines asked for their health each second: a worker part, which never listens, must
        # not be taken for a hung engine (it is not asked at all).
        tables='[scheduler]\nhealth_interval = "1s"',
    )
    try:
        yield made
    finally:
        made.down()


def units(node: Node) -> set[str]:
    return {f"sparkctl-{node.name.removeprefix('spark-')}-solo.service", "sparkctl-span.service"}


class Watch:
    """Both nodes' systemds, followed over D-Bus and sampled: the instants with two tenants."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.monitors = {n.name: UnitMonitor(units(n)) for n in cluster.nodes}
        self.buses: list[Systemd] = []
        self.sampler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        for node in self.cluster.nodes:
            bus = await Systemd.connect(node.box.bus_address, on_event=self.monitors[node.name])
            self.buses.append(bus)
        self.sampler = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            for node, bus in zip(self.cluster.nodes, self.buses, strict=True):
                listed = await bus.list_units(sorted(units(node)))
                busy = [u for u, active, _ in listed if active in ("active", "activating", "deactivating")]
                monitor = self.monitors[node.name]
                monitor.samples += 1
                if len(busy) > 1:
                    monitor.violations.append(dict.fromkeys(busy, "sampled"))
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        assert self.sampler is not None
        self.sampler.cancel()
        await asyncio.gather(self.sampler, return_exceptions=True)
        for bus in self.buses:
            await bus.close()
        for name, monitor in self.monitors.items():
            assert monitor.samples > 10, name
            assert not monitor.violations, f"{name} had two tenants at once: {monitor.violations[:3]}"


@pytest.fixture
async def watch(cluster: Cluster) -> AsyncIterator[Watch]:
    async with Watch(cluster) as w:
        yield w


async def chat(node: Node, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    argv = node.netns(sys.executable, CLIENT, "chat", f"http://127.0.0.1:{PORT}", node.key, json.dumps(plan))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    results: list[dict[str, Any]] = json.loads(out)
    return results


def get(node: Node, path: str) -> tuple[int, Any]:
    argv = node.netns(sys.executable, CLIENT, "get", f"http://127.0.0.1:{PORT}", node.key, path)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(proc.stdout)
    return answer["status"], answer["body"]


def state(node: Node, unit: str) -> str:
    return node.box.systemctl("is-active", unit, check=False).stdout.strip()


async def until(what: str, check: Any, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


def reserved_by(node: Node) -> str | None:
    status, body = get(node, "/api/v1/status")
    assert status == 200, body
    value: str | None = {m["id"]: m for m in body["models"]}["span"].get("reserved_by")
    return value


async def test_every_node_lists_the_spanning_model_as_its_owners(cluster: Cluster) -> None:
    for node in cluster.nodes:
        status, body = get(node, "/v1/models")
        assert status == 200, body
        entries = {m["id"]: m for m in body["data"]}
        assert entries["span"]["node"] == "spark-a", node.name
        assert entries["span"]["available"] is True
        assert {m: e["node"] for m, e in entries.items()} == {
            "a-solo": "spark-a",
            "b-solo": "spark-b",
            "span": "spark-a",
        }


async def test_a_node_missing_the_weights_fails_at_once_and_nothing_stops(
    cluster: Cluster, watch: Watch
) -> None:
    a, b = cluster[0], cluster[1]
    solos = await asyncio.gather(chat(a, [{"model": "a-solo"}]), chat(b, [{"model": "b-solo"}]))
    assert all(r[0]["ok"] for r in solos), solos
    shutil.rmtree(repo_dir(b.hf_cache, "org/span"))  # never pulled on spark-b
    try:
        (refused,) = await chat(a, [{"model": "span"}])
    finally:
        write_placeholder(b.hf_cache, "org/span")
    assert not refused["ok"] and refused["code"] == "model_start_failed", refused
    assert "on spark-b" in refused["message"] and "sparkctl pull span" in refused["message"], refused
    assert refused["seconds"] < 5, refused
    # nothing was evicted anywhere, and no part started
    assert state(a, "sparkctl-a-solo.service") == "active"
    assert state(b, "sparkctl-b-solo.service") == "active"
    assert state(a, "sparkctl-span.service") in ("inactive", "failed")
    assert state(b, "sparkctl-span.service") in ("inactive", "failed")
    assert reserved_by(b) is None


async def test_a_request_at_either_node_evicts_both_tenants_and_is_served(
    cluster: Cluster, watch: Watch
) -> None:
    a, b = cluster[0], cluster[1]
    await asyncio.gather(chat(a, [{"model": "a-solo"}]), chat(b, [{"model": "b-solo"}]))
    (served,) = await chat(a, [{"model": "span", "stream": True, "max_tokens": 12}])
    assert served["ok"] and len(served["content"].split()) == 12, served
    assert state(a, "sparkctl-span.service") == "active"  # the head …
    assert state(b, "sparkctl-span.service") == "active"  # … and its worker, on the other node
    assert state(a, "sparkctl-a-solo.service") == "inactive"
    assert state(b, "sparkctl-b-solo.service") == "inactive"
    assert reserved_by(b) == "spark-a"
    assert "multinode: all 2 nodes joined" in a.box.journal(unit="sparkctl-span.service")
    # at the worker node: relayed to the owner, which serves it
    (relayed,) = await chat(b, [{"model": "span"}])
    assert relayed["ok"] and relayed["served_by"] == "span", relayed
    status, metrics = get(b, "/metrics")
    assert status == 200
    assert 'sparkctl_relayed_requests_total{model="span",node="spark-a",status="200"}' in metrics
    status, listed = get(b, "/v1/models")
    assert status == 200
    assert {m["id"]: m["state"] for m in listed["data"]}["span"] == "ready"  # the owner's view


async def test_a_local_request_at_the_worker_node_gets_its_node_back(cluster: Cluster, watch: Watch) -> None:
    a, b = cluster[0], cluster[1]
    (first,) = await chat(a, [{"model": "span"}])
    assert first["ok"], first
    # spark-b's own model: its node is held, so it waits; the owner hears of it at its next
    # renewal and drains `span` as for a local swap, stops it and releases spark-b
    (local,) = await chat(b, [{"model": "b-solo", "stream": True}])
    assert local["ok"], local
    assert state(b, "sparkctl-b-solo.service") == "active"
    assert state(a, "sparkctl-span.service") == "inactive"
    assert state(b, "sparkctl-span.service") in ("inactive", "failed")
    assert reserved_by(b) is None
    journal = a.box.journal(unit="sparkctl.service")
    assert "spark-b wants its node back: draining span" in journal, journal


async def test_local_and_spanning_requests_at_once_from_both_nodes(cluster: Cluster, watch: Watch) -> None:
    a, b = cluster[0], cluster[1]
    plan_a = [{"model": m, "stream": i % 2 == 0} for i, m in enumerate(["span", "a-solo", "span", "b-solo"])]
    plan_b = [{"model": m, "stream": i % 2 == 1} for i, m in enumerate(["b-solo", "span", "a-solo", "span"])]
    results_a, results_b = await asyncio.gather(chat(a, plan_a), chat(b, plan_b))
    for result in results_a + results_b:
        assert result["ok"], result


async def test_a_worker_killed_mid_stream_ends_it_and_frees_both_nodes(
    cluster: Cluster, watch: Watch
) -> None:
    a, b = cluster[0], cluster[1]
    (ready,) = await chat(a, [{"model": "span"}])
    assert ready["ok"], ready
    # 400 tokens at 40/s (ignore_eos: the reply to this prompt would end by itself after 3 s): ten
    # seconds of stream; the worker is killed a second and a half in
    long = {"model": "span", "stream": True, "max_tokens": 400, "ignore_eos": True}
    streaming = asyncio.ensure_future(chat(a, [long]))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(b.box.systemctl, "kill", "--signal=SIGKILL", "sparkctl-span.service")
    (cut,) = await asyncio.wait_for(streaming, 9)  # before the stream would have ended
    assert not cut["ok"], cut
    await until("the head did not go down", lambda: state(a, "sparkctl-span.service") != "active")
    await until("spark-b was not released", lambda: reserved_by(b) is None)
    (back,) = await chat(b, [{"model": "b-solo"}])  # spark-b's own model starts again
    assert back["ok"], back


async def test_the_owners_daemon_restarted_keeps_the_model_and_its_nodes(
    cluster: Cluster, watch: Watch
) -> None:
    a, b = cluster[0], cluster[1]
    (ready,) = await chat(a, [{"model": "span"}])
    assert ready["ok"], ready
    pid = a.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl-span.service").stdout.strip()
    await asyncio.to_thread(a.box.systemctl, "restart", "sparkctl.service")
    await asyncio.sleep(LEASE * 1.2)  # past the lease: only renewals by the new daemon keep spark-b
    assert reserved_by(b) == "spark-a"
    (again,) = await chat(b, [{"model": "span", "stream": True}])
    assert again["ok"], again
    after = a.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl-span.service").stdout.strip()
    assert after == pid  # adopted, not restarted
    assert state(b, "sparkctl-span.service") == "active"


async def test_the_worker_nodes_daemon_restarted_keeps_the_node_held(cluster: Cluster, watch: Watch) -> None:
    a, b = cluster[0], cluster[1]
    (ready,) = await chat(a, [{"model": "span"}])
    assert ready["ok"], ready
    pid = b.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl-span.service").stdout.strip()
    # a stream through the restart: the worker part serves on, the new daemon holds the node again
    streaming = asyncio.ensure_future(chat(a, [{"model": "span", "stream": True, "max_tokens": 120}]))
    await asyncio.sleep(1)
    await asyncio.to_thread(b.box.systemctl, "restart", "sparkctl.service")
    (during,) = await streaming
    assert during["ok"] and len(during["content"].split()) == 120, during
    await asyncio.sleep(LEASE * 1.2)  # renewals reached the new daemon
    assert reserved_by(b) == "spark-a"
    after = b.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl-span.service").stdout.strip()
    assert after == pid  # the worker adopted, not restarted
    (again,) = await chat(b, [{"model": "span"}])
    assert again["ok"], again


async def test_a_peer_unreachable_stops_the_model_with_a_clear_error(cluster: Cluster, watch: Watch) -> None:
    a, b = cluster[0], cluster[1]
    (ready,) = await chat(a, [{"model": "span"}])
    assert ready["ok"], ready
    # 20 s of stream at 40 tokens/s (the reply to this prompt would end by itself after 3 s, a
    # race with the cut's detection): the cut must end it, with an error
    long = {"model": "span", "stream": True, "max_tokens": 800, "ignore_eos": True}
    streaming = asyncio.ensure_future(chat(a, [long]))
    await asyncio.sleep(1.5)
    cluster.network.cut(1)
    try:
        (cut,) = await asyncio.wait_for(streaming, 15)
        assert not cut["ok"], cut
        await until("the head did not stop", lambda: state(a, "sparkctl-span.service") != "active")
        (refused,) = await chat(a, [{"model": "span"}])  # spark-b cannot be asked: at once
        assert not refused["ok"] and refused["code"] == "peer_unavailable", refused
        assert "spark-b" in refused["message"], refused
        (local,) = await chat(a, [{"model": "a-solo"}])  # this node's own: unaffected
        assert local["ok"], local
    finally:
        cluster.network.mend(1)
    # the owner could not release spark-b: its reservation runs out by itself, and it is free
    await until("spark-b did not free itself", lambda: reserved_by(b) is None, within=LEASE + 10)
    await until("spark-b's worker still runs", lambda: state(b, "sparkctl-span.service") != "active")
    (back,) = await chat(b, [{"model": "b-solo"}])
    assert back["ok"], back


# ------------------------------------------------------------------------------ three Sparks
def _three(node: Node) -> None:
    _models(node)
    span = (node.catalog / "span.toml").read_text()
    assert '"nodes" = 2' in span
    (node.catalog / "span.toml").write_text(span.replace('"nodes" = 2', '"nodes" = 3'))


@pytest.fixture(scope="module")
def three() -> Iterator[Cluster]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    made = sandbox_cluster.up(
        ("spark-a", "spark-b", "spark-c"),
        boxes=f"v{os.getpid()}",
        port=PORT,
        models=_three,
        prefix="10.77.2",
        extra=f'master_port = 29262\nreservation_lease = "{LEASE}s"',
    )
    try:
        yield made
    finally:
        made.down()


async def test_three_sparks_behind_a_switch_run_one_model_across_all_three(three: Cluster) -> None:
    a, b, c = three.nodes
    async with Watch(three):
        solos = await asyncio.gather(*(chat(n, [{"model": f"{n.name[-1]}-solo"}]) for n in three.nodes))
        assert all(r[0]["ok"] for r in solos), solos
        (served,) = await chat(c, [{"model": "span", "stream": True, "max_tokens": 12}])  # relayed to a
        assert served["ok"] and len(served["content"].split()) == 12, served
        for node in three.nodes:
            assert state(node, "sparkctl-span.service") == "active", node.name
            assert state(node, f"sparkctl-{node.name[-1]}-solo.service") == "inactive", node.name
        assert reserved_by(b) == reserved_by(c) == "spark-a"
        assert "multinode: all 3 nodes joined" in a.box.journal(unit="sparkctl-span.service")
        (local,) = await chat(c, [{"model": "c-solo"}])  # c wants itself back: the model makes way
        assert local["ok"], local
        assert state(a, "sparkctl-span.service") == "inactive"
        await until("spark-b was not released", lambda: reserved_by(b) is None)
