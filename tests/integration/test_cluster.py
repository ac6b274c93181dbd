"""A cluster of sandboxed Sparks (#15), two on one cable and three behind a switch: real
systemds, each in its own network namespace, joined by veth pairs that stand for the QSFP link
(10.77.0.0/24, inside the namespaces this test makes), each with its own installed,
socket-activated sparkctl daemon and an emulated model of its own. Clients (the openai SDK) run inside a node's namespace
and talk to that node's loopback; nodes talk to each other over the link only.

Covered: every node lists the whole cluster; a streaming client on one node gets a peer's model;
local and remote requests at once from two nodes; a client that leaves mid-stream ends the
peer's request too; a peer's daemon restarted; a stream in flight when a cable is pulled ends
with an error; a peer unreachable
(cable pulled: 503 peer_unavailable quickly, local models unaffected, back once plugged in) and a
peer whose daemon is stopped (refused: 503 at once)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.link import Network, join
from sparkctl.sandbox.weights import write_placeholder
from tests.conftest import _unavailable
from tests.integration.conftest import SPARKCTL, emulated

PORT = 29201  # each node's gateway, on its loopback and on its link address
ENGINE_PORT = 29210
NAMES = ("spark-a", "spark-b", "spark-c")
CLIENT = str(Path(__file__).with_name("cluster_client.py"))


@dataclass
class Node:
    name: str
    box: Box
    address: str
    config: Path
    key: str = ""

    @property
    def model(self) -> str:
        return f"{self.name.removeprefix('spark-')}-chat"

    def sparkctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.box.run(SPARKCTL, "--config", str(self.config), *args, check=check, timeout=120)

    def _argv(self, *args: str) -> list[str]:
        assert self.box.init_pid is not None
        # Only the network namespace: the client is this checkout's Python, on the host's files.
        return ["nsenter", "-t", str(self.box.init_pid), "-n", "--", sys.executable, CLIENT, *args]

    async def chat(self, plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{PORT}"
        proc = await asyncio.create_subprocess_exec(
            *self._argv("chat", url, self.key, json.dumps(plan)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        results: list[dict[str, Any]] = json.loads(out)
        return results

    def get(self, path: str) -> tuple[int, Any]:
        argv = self._argv("get", f"http://127.0.0.1:{PORT}", self.key, path)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        answer = json.loads(proc.stdout)
        return answer["status"], answer["body"]

    def models(self) -> dict[str, dict[str, Any]]:
        status, body = self.get("/v1/models")
        assert status == 200, body
        return {m["id"]: m for m in body["data"]}

    def unit_state(self, model: str) -> str:
        unit = f"sparkctl-{model}.service"
        return self.box.systemctl("is-active", unit, check=False).stdout.strip()


def _config(node: Node, peers: list[Node], base: Path) -> str:
    lines = [
        "[gateway]",
        f'listen = ["127.0.0.1:{PORT}", "{node.address}:{PORT}"]',
        'shutdown_grace = "5s"',
        "[catalog]",
        f'dirs = ["{base / "models"}"]',
        "[runtime]",
        'container_network = "host"',
        f'sparkctl = "{SPARKCTL}"',
        f'hf_cache = "{base / "hf"}"',
        f'compile_cache = "{base / "compile"}"',
        "[cluster]",
        f'node = "{node.name}"',
        'interface = "qsfp0"',
        'poll_interval = "1s"',
        'connect_timeout = "1s"',
        'poll_timeout = "2s"',
    ]
    for peer in peers:
        lines += [
            "[[cluster.peers]]",
            f'name = "{peer.name}"',
            f'url = "http://{peer.address}:{PORT}"',
            f'api_key_file = "{base / "peers" / peer.name}"',
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Cluster:
    nodes: list[Node]
    network: Network

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    @property
    def models(self) -> dict[str, str]:
        """Every node's model, and the node that serves it."""
        return {node.model: node.name for node in self.nodes}


@pytest.fixture(scope="module", params=[2, 3], ids=["two-on-a-cable", "three-behind-a-switch"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    boxes: list[Box] = []
    nodes: list[Node] = []
    try:
        for i in range(request.param):
            boxes.append(Box.up(name=f"k{os.getpid()}{i}", net="private"))
        network = join(boxes, "10.77.0")
        nodes = [
            Node(name, box, network.address(i), box.path / "cluster" / "sparkctl.toml")
            for i, (name, box) in enumerate(zip(NAMES, boxes, strict=False))
        ]
        for node in nodes:
            base = node.config.parent
            for d in (base / "hf", base / "compile", base / "peers"):
                d.mkdir(parents=True, exist_ok=True)
            write_placeholder(base / "hf", "org/model")
            emulated(
                base / "models",
                node.model,
                ENGINE_PORT,
                load_time=0.3,
                engine={"args": ["--load-time", "0.3", "--tokens-per-second", "40"]},
            )
            node.config.write_text(_config(node, [p for p in nodes if p is not node], base))
            proc = node.sparkctl("install")
            node.key = proc.stdout.strip()
            assert node.key.startswith("sk-spark-"), proc.stdout + proc.stderr
            assert "the daemon does not start without it" in proc.stderr  # the peers' keys, not yet there
        # Each node holds an admin key of each other node's; install again gives those files to
        # its daemon's group, as docs/cluster.md says.
        for node in nodes:
            for peer in nodes:
                if peer is not node:
                    (node.config.parent / "peers" / peer.name).write_text(peer.key + "\n")
            assert node.sparkctl("install").stdout == ""  # no new key: the first one stands
            for peer in nodes:
                if peer is not node:
                    owner = node.box.run(
                        "stat", "-c", "%U:%G %a", str(node.config.parent / "peers" / peer.name)
                    )
                    assert owner.stdout.split() == ["root:sparkctl", "640"]
        yield Cluster(nodes, network)
    finally:
        for node in nodes:
            if node.key:
                node.sparkctl("uninstall", check=False)
                left = node.box.systemctl(
                    "list-units",
                    "--plain",
                    "--no-legend",
                    "--state=active,activating",
                    "sparkctl*",
                    check=False,
                ).stdout
                assert not left.strip(), f"{node.name}: uninstall left units running: {left}"
        for box in boxes:
            shutil.rmtree(box.path / "cluster", ignore_errors=True)
            box.down()


def test_every_node_lists_the_whole_cluster_with_each_models_node(cluster: Cluster) -> None:
    for node in cluster:
        models = node.models()
        assert {m: e["node"] for m, e in models.items()} == cluster.models, node.name
        assert all(e["available"] for e in models.values())
    # the admin view: this node's name and its peers
    status, body = cluster[0].get("/api/v1/status")
    assert status == 200 and body["node"] == "spark-a"
    assert [(p["name"], p["available"]) for p in body["peers"]] == [(n.name, True) for n in cluster.nodes[1:]]
    ps = cluster[0].sparkctl("ps", "-a").stdout.splitlines()
    assert ps[0].split()[:3] == ["MODEL", "NODE", "STATE"]
    assert {line.split()[0]: line.split()[1] for line in ps[1:]} == cluster.models


async def test_a_streaming_client_gets_a_peers_model_through_its_own_node(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    (result,) = await a.chat([{"model": "b-chat", "stream": True, "max_tokens": 12}])
    assert result["ok"], result
    assert result["chunks"] >= 6 and len(result["content"].split()) == 12  # chunk by chunk, whole
    assert b.unit_state("b-chat") == "active"  # started where it lives …
    assert "b-chat" not in a.box.systemctl("list-units", "--all", "--plain", "sparkctl-*").stdout  # … only
    status, metrics = a.get("/metrics")
    assert status == 200
    assert 'sparkctl_relayed_requests_total{model="b-chat",node="spark-b",status="200"}' in metrics
    assert 'sparkctl_peer_up{node="spark-b"} 1.0' in metrics


async def test_local_and_remote_requests_at_once_from_two_nodes(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    every = list(cluster.models) * 3
    plan_a = [{"model": m, "stream": i % 2 == 0} for i, m in enumerate(every)]
    plan_b = [{"model": m, "stream": i % 2 == 1} for i, m in enumerate(reversed(every))]
    results_a, results_b = await asyncio.gather(a.chat(plan_a), b.chat(plan_b))
    for result in results_a + results_b:
        assert result["ok"], result
        if not result["stream"]:
            assert result["served_by"] == result["model"] and result["completion_tokens"] == 8
    for node in cluster:
        assert node.unit_state(node.model) == "active"


async def test_a_client_that_leaves_ends_the_request_on_the_peer_too(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    # 400 tokens at 40/s (ignore_eos, or the reply would end by itself after 3 s): ten seconds of
    # stream, unless the relay passes the disconnect on
    leaving = {"model": "b-chat", "stream": True, "max_tokens": 400, "ignore_eos": True, "abandon": True}
    (left,) = await a.chat([leaving])
    assert left["ok"] and left["abandoned"], left
    deadline = time.monotonic() + 3
    while True:
        status, body = b.get("/api/v1/status")
        assert status == 200, body
        if {m["id"]: m["in_flight"] for m in body["models"]}["b-chat"] == 0:
            break
        assert time.monotonic() < deadline, "spark-b still serves a request its client left"
        await asyncio.sleep(0.2)


async def test_a_peers_daemon_restarted_is_served_again(cluster: Cluster) -> None:
    a, b = cluster[0], cluster[1]
    pid_before = b.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl.service").stdout.strip()
    # A stream in flight through the restart: b's daemon lets it finish within its grace.
    streaming = asyncio.ensure_future(a.chat([{"model": "b-chat", "stream": True, "max_tokens": 120}]))
    await asyncio.sleep(1.5)  # (the client's start, then some 20 tokens of 3 s of them)
    await asyncio.to_thread(b.box.systemctl, "restart", "sparkctl.service")
    (during,) = await streaming
    assert during["ok"] and len(during["content"].split()) == 120, during
    results = await a.chat([{"model": "b-chat"}, {"model": "b-chat", "stream": True}])
    assert all(r["ok"] for r in results), results
    pid_after = b.box.systemctl("show", "-p", "MainPID", "--value", "sparkctl.service").stdout.strip()
    assert pid_after != pid_before  # a new daemon, which adopted the running engine
    assert b.unit_state("b-chat") == "active"


async def test_a_peer_unreachable_is_503_quickly_and_nothing_local_waits(cluster: Cluster) -> None:
    a, network = cluster[0], cluster.network
    network.cut(1)  # b's cable pulled: packets to it go nowhere
    try:
        # polls time out within poll_timeout: b is found down
        deadline = time.monotonic() + 10
        while a.models()["b-chat"]["available"]:
            assert time.monotonic() < deadline, "spark-a did not notice spark-b was gone"
            await asyncio.sleep(0.3)
        models = a.models()
        assert models["b-chat"]["state"] == "unavailable" and models["b-chat"]["node"] == "spark-b"
        assert all(e["available"] for m, e in models.items() if m != "b-chat")
        others = [m for m in cluster.models if m != "b-chat"]  # this node's, and a third's if any
        results = await a.chat(
            [{"model": "b-chat"}, {"model": "b-chat", "stream": True}, *({"model": m} for m in others)]
        )
        for r in results[:2]:
            assert not r["ok"] and r["status"] == 503 and r["code"] == "peer_unavailable", r
            assert r["seconds"] < 3, r  # at once (a fresh process: its imports are in this)
        assert all(r["ok"] for r in results[2:]), results
        ps = a.sparkctl("ps", "-a")
        assert "spark-b" in ps.stdout and "unavailable" in ps.stdout
        assert "node spark-b (http://10.77.0.2:29201) does not answer" in ps.stderr
    finally:
        network.mend(1)
    deadline = time.monotonic() + 15
    while not a.models()["b-chat"]["available"]:
        assert time.monotonic() < deadline, "spark-a did not notice spark-b was back"
        await asyncio.sleep(0.3)
    (back,) = await a.chat([{"model": "b-chat", "stream": True}])
    assert back["ok"], back


async def test_a_stream_in_flight_when_the_cable_is_pulled_ends_with_an_error(cluster: Cluster) -> None:
    a, network = cluster[0], cluster.network
    # 400 tokens at 40/s (ignore_eos: the reply to this prompt would end by itself after 3 s): ten
    # seconds of stream; the cable is pulled a second and a half in
    long = {"model": "b-chat", "stream": True, "max_tokens": 400, "ignore_eos": True}
    streaming = asyncio.ensure_future(a.chat([long]))
    await asyncio.sleep(1.5)
    network.cut(1)
    try:
        (cut,) = await asyncio.wait_for(streaming, 9)  # before the stream would have ended
        assert not cut["ok"] and cut["code"] == "peer_unavailable", cut
        assert "spark-b" in cut["message"], cut
    finally:
        network.mend(1)
    deadline = time.monotonic() + 15
    while not a.models()["b-chat"]["available"]:
        assert time.monotonic() < deadline, "spark-a did not notice spark-b was back"
        await asyncio.sleep(0.3)


async def test_a_peer_whose_daemon_is_stopped_is_refused_at_once(cluster: Cluster) -> None:
    a, c = cluster[0], cluster.nodes[-1]
    await asyncio.to_thread(c.box.systemctl, "stop", "sparkctl.socket", "sparkctl.service")
    try:
        results = await a.chat([{"model": c.model}, {"model": "a-chat"}])
        refused, local = results
        assert refused["status"] == 503 and refused["code"] == "peer_unavailable", refused
        assert c.name in refused["message"] and local["ok"], results
    finally:
        await asyncio.to_thread(c.box.systemctl, "start", "sparkctl.socket")
    deadline = time.monotonic() + 15
    while True:
        (again,) = await a.chat([{"model": c.model}])
        if again["ok"]:
            break
        assert again["code"] == "peer_unavailable" and time.monotonic() < deadline, again
        await asyncio.sleep(0.5)
