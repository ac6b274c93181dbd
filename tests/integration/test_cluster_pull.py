"""`sparkctl pull` of a model that spans two sandboxed Sparks (#15): real systemds in their own
network namespaces joined by a veth pair (10.79.0.0/24, this test's own), each with its installed,
socket-activated daemon running as its `sparkctl` user (spark-b with a Hugging Face token), and
a fake Hugging Face Hub (a process in
spark-a's namespace, on its link address) that both reach. `sparkctl pull` on spark-a fills both
caches: spark-b's through its daemon, which spark-b's own preflight then finds complete. A
spark-b that does not answer is named, and the same pull run again finishes the job.

Ports 29400-29499 and the boxes' names are this file's own (tests/integration/test_cluster.py
uses others), so both may run at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkctl.core.weights import repo_dir, weights_present
from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox import cluster
from sparkctl.sandbox.cluster import Node
from sparkctl.sandbox.image import IMAGE
from tests.conftest import _unavailable
from tests.helpers import write_model
from tests.integration.conftest import SPARKCTL
from tests.unit.test_pull import COMMIT

PORT = 29401  # each node's gateway, on its loopback and its link address
HUB_PORT = 29402  # the fake Hub, on spark-a's link address
PREFIX = "10.79.0"
MODEL = "span-pull"
REPO = "org/span-pull"
ROOT = Path(__file__).resolve().parents[2]
CLIENT = str(Path(__file__).with_name("cluster_client.py"))


@dataclass
class Pair:
    a: Node
    b: Node
    hub_url: str

    @property
    def hub_env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.hub_url}


def sparkctl(node: Node, *args: str, check: bool = True, env: dict[str, str] | None = None) -> Any:
    """`sparkctl ARGS` as root on the node (the CLI's own environment: `env`)."""
    return node.box.run(node.sparkctl, "--config", str(node.config), *args, check=check, timeout=120, env=env)


def get(node: Node, url: str, key: str, path: str) -> tuple[int, Any]:
    """A GET from inside this node's network namespace."""
    argv = node.netns(sys.executable, CLIENT, "get", url, key, path)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(proc.stdout)
    return answer["status"], answer["body"]


def _models(node: Node, hub_url: str) -> None:
    # The model spans both nodes, and is pulled on both before it is enabled (as the shipped
    # 70B example is, docs/cluster.md): a pull needs no enabled model.
    write_model(
        node.catalog,
        MODEL,
        status="disabled",
        disabled_reason="enabled once pulled on every node",
        source={"hf_repo": REPO},
        serve={"nodes": 2, "gpu": "exclusive", "owner": "spark-a"},
        engine={"runtime": "process", "image": None, "command": [SPARKCTL, "emulate"], "port": 29410},
    )
    # An enabled model in a container (never started here), for `images`.
    write_model(
        node.catalog,
        "boxed",
        engine={"image": IMAGE, "port": 29411, "host_port": 29411},
        serve={"direct_port": 0},
    )
    # Where a Spark would reach the Hub: this one reaches the fake (a drop-in, as an operator
    # would point the daemon at a mirror).
    dropin = node.box.unit_dir / "sparkctl.service.d" / "hub.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(f"[Service]\nEnvironment=HF_ENDPOINT={hub_url}\n")
    if node.name == "spark-b":
        # a Hugging Face token (root's, 0600): install gives it to the daemon's group
        node.box.run(
            "sh", "-c", "mkdir -p /etc/sparkctl && umask 077 && echo hf_bench_token > /etc/sparkctl/hf-token"
        )


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    hub_url = f"http://{PREFIX}.1:{HUB_PORT}"  # spark-a's link address (sandbox/link.py)
    nodes = cluster.up(
        ("spark-a", "spark-b"),
        boxes=f"pl{os.getpid()}",
        port=PORT,
        prefix=PREFIX,
        models=lambda node: _models(node, hub_url),
    )
    hub: subprocess.Popen[str] | None = None
    try:
        a, b = nodes[0], nodes[1]
        assert a.address == f"{PREFIX}.1"
        hub = subprocess.Popen(
            a.netns(sys.executable, "-m", "tests.integration.fake_hub", a.address, str(HUB_PORT), REPO),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert hub.stdout is not None and hub.stdout.readline().strip() == "ready"
        yield Pair(a, b, hub_url)
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(10)
        nodes.down()


def _preflight(pair: Pair) -> dict[str, Any]:
    """spark-b's preflight of the model, asked by spark-a over the link with spark-b's key."""
    status, body = get(
        pair.a, f"http://{pair.b.address}:{PORT}", pair.b.key, f"/api/v1/models/{MODEL}/preflight"
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def test_pull_fills_every_node_a_model_spans_and_a_node_down_is_named(pair: Pair) -> None:
    a, b = pair.a, pair.b
    before = _preflight(pair)
    assert before["node"] == "spark-b" and not before["ready"]
    assert before["missing"] == [
        f"weights for {REPO}@main are not in {b.hf_cache}: run sparkctl pull {MODEL}"
    ]

    # spark-b's daemon down (its socket too: nothing answers): named, and this node's pull goes on.
    b.box.systemctl("stop", "sparkctl.socket", "sparkctl.service")
    try:
        down = sparkctl(a, "pull", "--no-image", MODEL, check=False, env=pair.hub_env)
    finally:
        b.box.systemctl("start", "sparkctl.socket")
    assert down.returncode == 1 and down.stdout == "", down.stdout + down.stderr
    last = down.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: spark-b does not answer at http://{b.address}:{PORT}: "), down.stderr
    assert last.endswith(
        f"run `sparkctl pull {MODEL}` again once it answers: a pull resumes where it stopped"
    )
    assert weights_present(a.hf_cache, REPO)
    assert not weights_present(b.hf_cache, REPO)

    # The same pull again: spark-a has everything, spark-b's daemon fetches its part.
    again = sparkctl(a, "pull", "--no-image", MODEL, env=pair.hub_env)
    assert again.stdout == f"{MODEL}: ready\n", again.stderr
    (plan,) = [line for line in again.stderr.splitlines() if line.startswith(f"spark-a: {REPO}@main is")]
    assert plan.startswith(f"spark-a: {REPO}@main is commit {COMMIT[:12]}: 4 files")
    assert "0 B to download" in plan  # nothing left for spark-a
    assert f"spark-b: {REPO}@main is commit {COMMIT[:12]}" in again.stderr
    assert "spark-b: span-pull ready" in again.stderr
    # spark-b's daemon read its token (install gave the file to the daemon's group).
    assert "spark-b: using the Hugging Face token from /etc/sparkctl/hf-token" in again.stderr
    assert weights_present(b.hf_cache, REPO)
    after = _preflight(pair)
    assert {k: v for k, v in after.items() if k != "catalog_sha256"} == {
        "node": "spark-b",
        "model": MODEL,
        "ready": True,
        "missing": [],
    }

    # spark-b's daemon wrote them, as its own user, readable by the engines, and the unit's
    # own start-time check agrees.
    blob = next((repo_dir(b.hf_cache, REPO) / "blobs").iterdir())
    owner = b.box.run("stat", "-c", "%U %a", str(blob)).stdout.split()
    assert owner[0] == "sparkctl" and int(owner[1], 8) & 0o004, owner
    check = b.box.run(
        SPARKCTL, "preflight", "--model", MODEL, "--hf-cache", str(b.hf_cache), "--repo", REPO, check=False
    )
    assert check.returncode == 0, check.stderr


def test_doctor_finds_the_cache_the_daemons_to_pull_into(pair: Pair) -> None:
    for node in (pair.a, pair.b):
        checks = {c["check"]: c for c in json.loads(sparkctl(node, "doctor", "--json", check=False).stdout)}
        assert checks["cluster pulls"]["status"] == "pass", checks["cluster pulls"]


def test_images_list_every_nodes_images(pair: Pair) -> None:
    listed = sparkctl(pair.a, "images", "list")
    assert listed.stdout.splitlines()[0].split()[:3] == ["NODE", "IMAGE", "SOURCE"], listed.stdout
    assert "does not answer" not in listed.stderr
    rows = json.loads(sparkctl(pair.a, "images", "list", "--json").stdout)
    assert [(r["node"], r["image"], r["models"]) for r in rows] == [
        ("spark-a", IMAGE, ["boxed"]),
        ("spark-b", IMAGE, ["boxed"]),
    ]
    # spark-b's state as its daemon can tell it (its user has no Podman of its own: unknown)
    assert rows[1]["state"] in ("present", "missing", "unknown"), rows[1]
