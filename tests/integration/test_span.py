"""A model that spans two sandboxed Sparks (#15), as its units are rendered today: each node's
real systemd 252 in its own network namespace, the two joined by a veth pair standing for the
QSFP link (10.77.0.0/24, inside the namespaces this test makes), the emulator's multi-node mode
standing in for vLLM's native form (`--nnodes/--node-rank/--master-addr/--headless`).

The parts are started by hand here, in the order the owner's daemon is to start them (the worker,
then the head), since the daemon's side of spanning models is not built yet: what this holds is
that the rendered units run as one model across the link — the head's start job ends only once
the worker joined and it answers, a chat completion is served, and a worker killed takes the head
down with it (both units fail, nothing keeps running on either node)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sparkctl.catalog import load_catalog
from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.link import INTERFACE, join
from sparkctl.settings import Settings
from sparkctl.units.render import render
from sparkctl.units.sync import sync
from tests.conftest import _unavailable, box_settings
from tests.integration.conftest import emulated, engine_headers

NAMES = ("spark-a", "spark-b")
ENGINE_PORT = 29360  # the head's engine, on spark-a's loopback
MASTER_PORT = 29361  # the head's --master-port, on the link
UNIT = "sparkctl-span.service"
ASK = (
    "import json, sys, urllib.request as u; "
    "r = u.Request(sys.argv[1], data=sys.argv[2].encode(), headers=json.loads(sys.argv[3])); "
    "print(u.urlopen(r, timeout=10).read().decode())"
)


@dataclass
class Spark:
    name: str
    box: Box
    settings: Settings

    def state(self) -> str:
        return self.box.systemctl("is-active", UNIT, check=False).stdout.strip()


@pytest.fixture(scope="module")
def sparks() -> Iterator[list[Spark]]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    boxes: list[Box] = []
    try:
        for i in range(2):
            boxes.append(Box.up(name=f"s{os.getpid()}{i}", net="private"))
        network = join(boxes, "10.77.0")
        sparks = []
        for i, (name, box) in enumerate(zip(NAMES, boxes, strict=True)):
            other = 1 - i
            cluster = {
                "node": name,
                "interface": INTERFACE,
                "address": network.address(i),
                "master_port": MASTER_PORT,
                "peers": [
                    {
                        "name": NAMES[other],
                        "url": f"http://{network.address(other)}:29300",
                        "api_key_file": str(box.path / "unused-key"),
                    }
                ],
            }
            settings = box_settings(box, cluster=cluster)
            catalog = box.path / "span-models"
            emulated(
                catalog,
                "span",
                ENGINE_PORT,
                # A head that never sees its worker fails its start within this, not the default 30m.
                serve={
                    "nodes": 2,
                    "multinode": "native",
                    "gpu": "exclusive",
                    "owner": "spark-a",
                    "start_timeout": "20s",
                },
                engine={"args": ["--load-time", "0.3", "--heartbeat-timeout", "2"]},
            )
            files = render(load_catalog(settings, [catalog]), settings)
            sync(files, {"quadlet": box.quadlet_dir, "unit": box.unit_dir})
            box.daemon_reload()
            sparks.append(Spark(name, box, settings))
        yield sparks
    finally:
        for box in boxes:
            box.systemctl("stop", UNIT, check=False)
            shutil.rmtree(box.path / "span-models", ignore_errors=True)
            box.down()


def test_the_parts_run_as_one_model_across_the_link(sparks: list[Spark]) -> None:
    head, worker = sparks
    assert (head.box.unit_dir / "sparkctl-span.socket").exists()  # the head's own port
    assert not (worker.box.unit_dir / "sparkctl-span.socket").exists()  # a worker takes no requests

    worker.box.systemctl("start", UNIT)  # no probe: active once it runs (it joins by itself)
    assert worker.state() == "active"
    # The head's start job ends when its probe sees it answer, which it does only once the
    # worker on the other node has joined it over the link.
    head.box.systemctl("start", UNIT)
    assert head.state() == "active"
    joined = head.box.journal(unit=UNIT)
    assert "multinode: all 2 nodes joined" in joined, joined

    body = json.dumps(
        {"model": "span", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}
    )
    headers = json.dumps({"Content-Type": "application/json", **engine_headers(head.settings)})
    url = f"http://127.0.0.1:{ENGINE_PORT}/v1/chat/completions"
    answer = json.loads(head.box.run(sys.executable, "-c", ASK, url, body, headers).stdout)
    assert answer["model"] == "span" and answer["choices"][0]["message"]["content"]

    # A worker that dies takes the model down: the head loses it within its heartbeat timeout
    # and exits non-zero, so both nodes end with no part running.
    worker.box.systemctl("kill", "--signal=SIGKILL", UNIT)
    for spark in sparks:
        spark.box.run(
            "sh",
            "-c",
            f"for i in $(seq 100); do systemctl is-active -q {UNIT} || exit 0; sleep 0.1; done; exit 1",
        )
        assert spark.state() in ("failed", "inactive"), spark.name
    assert head.state() == "failed"  # it exited non-zero: the lost worker is a failure, not a stop
    assert "lost worker" in head.box.journal(unit=UNIT)
