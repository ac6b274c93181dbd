"""`sparkctl pull` of a model that spans nodes, and `images` per node (#15), in process: a peer's
gateway (`POST /api/v1/models/{model}/pull`, `GET /api/v1/images`) fetching from a fake Hub in
this process (tests/unit/test_pull.py's), and the CLI on the other node driving it with the key
its [cluster] peers hold. The real thing on two sandboxed systemds:
tests/integration/test_cluster_pull.py."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner, Result

from sparkctl.apikeys import KeyFile, KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.cli import cli
from sparkctl.core.supervisor import Supervisor
from sparkctl.core.weights import weights_present
from sparkctl.gateway.app import build_app
from sparkctl.settings import Settings
from sparkctl.tools.pull import human_bytes
from sparkctl.units.own import own_units
from tests.helpers import free_port, write_model
from tests.unit import test_pull
from tests.unit.test_pull import COMMIT, MODEL_FILES, FakeHub, FakeRepo

hub = test_pull.hub  # the fake Hub, in this process; HF_ENDPOINT points at it

SPAN = {"nodes": 2, "gpu": "exclusive", "owner": "spark-a"}
DISABLED = {"status": "disabled", "disabled_reason": "enabled once pulled on every node"}


def _catalog(directory: Path) -> None:
    process = {"runtime": "process", "image": None, "command": ["vllm", "serve"], "port": 29491}
    write_model(directory, "big", source={"hf_repo": "org/big"}, serve=SPAN, engine=process, **DISABLED)
    # The same weights in a container image that no node has.
    image = {"command": ["vllm", "serve"], "image": "nvcr.io/nvidia/vllm:absent"}
    write_model(directory, "big-image", source={"hf_repo": "org/big"}, serve=SPAN, engine=image, **DISABLED)
    write_model(directory, "small", engine={"image": "localhost/sparkctl-present:latest"})
    write_model(directory, "other", engine={"image": "nvcr.io/nvidia/vllm:absent"})
    write_model(directory, "proc", engine={"runtime": "process", "image": None, "port": 29490})


@dataclass
class PeerNode:
    """spark-b: its gateway, an admin and a user key of its own, its cache."""

    client: TestClient[Any, Any]
    admin: str
    user: str
    hf_cache: Path

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def pull(self, model: str, key: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        r = await self.client.post(
            f"/api/v1/models/{model}/pull", headers={"Authorization": f"Bearer {key or self.admin}"}
        )
        text = await r.text()
        if r.status != 200:
            return r.status, [json.loads(text)]
        return r.status, [json.loads(line) for line in text.splitlines()]


@pytest.fixture
async def peer(tmp_path: Path, hub: FakeHub) -> AsyncIterator[PeerNode]:
    hub.repos["org/big"] = FakeRepo(files={COMMIT: dict(MODEL_FILES)}, refs={"main": COMMIT})
    base = tmp_path / "spark-b"
    settings = Settings.model_validate(
        {
            "gateway": {"api_keys_file": str(base / "api-keys")},
            "runtime": {"hf_cache": str(base / "hf")},
            "cluster": {
                "node": "spark-b",
                "peers": [{"name": "spark-a", "url": "http://127.0.0.1:9", "api_key_file": "/k"}],
            },
        }
    )
    _catalog(base / "models")
    catalog = load_catalog(settings, [base / "models"])
    store = KeyStore()
    admin, user = store.add("spark-a", admin=True), store.add("app")
    await asyncio.to_thread(store.save, base / "api-keys")
    keys = await asyncio.to_thread(KeyFile, base / "api-keys", interval=0.05)
    app = build_app(settings, catalog, Supervisor(catalog, settings), keys=keys)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield PeerNode(client, admin, user, base / "hf")


# ----------------------------------------------------------------------------------- the peer side
async def test_a_peer_pulls_a_spanning_models_weights_into_its_own_cache(
    peer: PeerNode, hub: FakeHub
) -> None:
    assert not await asyncio.to_thread(weights_present, peer.hf_cache, "org/big")
    status, events = await peer.pull("big")
    assert status == 200
    lines = [e["text"] for e in events if e["event"] == "line"]
    assert any(line.startswith(f"org/big@main is commit {COMMIT[:12]}") for line in lines), str(events[-1])
    assert events[-1] == {"event": "done", "node": "spark-b", "model": "big", "missing": []}
    assert await asyncio.to_thread(weights_present, peer.hf_cache, "org/big")
    # Readable to every engine, writable to the cache's group (a pull root starts, the daemon ends).
    shard = peer.hf_cache / "hub" / "models--org--big" / "snapshots" / COMMIT / "config.json"
    mode = await asyncio.to_thread(lambda: stat.S_IMODE(shard.resolve().stat().st_mode))
    assert mode & 0o064 == 0o064

    # Again: nothing left to fetch, and the files are not fetched twice.
    before = len(hub.gets("config.json"))
    status, events = await peer.pull("big")
    assert events[-1]["event"] == "done" and len(hub.gets("config.json")) == before
    r = await peer.client.get(
        "/api/v1/models/big/preflight", headers={"Authorization": f"Bearer {peer.admin}"}
    )
    assert {k: v for k, v in (await r.json()).items() if k != "catalog_sha256"} == {
        "node": "spark-b",
        "model": "big",
        "ready": True,
        "missing": [],
    }


async def test_a_failed_pull_says_why_and_that_it_resumes(peer: PeerNode, hub: FakeHub) -> None:
    hub.broken.add("model-00002-of-00002.safetensors")
    status, events = await peer.pull("big")
    assert status == 200
    failed = events[-1]
    assert failed["event"] == "failed" and failed["node"] == "spark-b" and failed["model"] == "big"
    assert "org/big@main" in failed["message"] and "run the same pull again" in failed["hint"]
    hub.broken.clear()
    status, events = await peer.pull("big")
    assert events[-1]["event"] == "done"
    assert await asyncio.to_thread(weights_present, peer.hf_cache, "org/big")


async def test_a_cache_the_daemon_cannot_write_is_named_with_its_fix(
    peer: PeerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the daemon's user sees a cache `install` has not given its group (root writes anything).
    monkeypatch.setattr("sparkctl.gateway.pulls.os.access", lambda path, mode: False)
    _, events = await peer.pull("big")
    assert events[-1]["event"] == "failed"
    assert (
        events[-1]["message"] == f"the daemon on spark-b cannot write its Hugging Face cache {peer.hf_cache}"
    )
    assert "sudo sparkctl install" in events[-1]["hint"]


async def test_only_an_admin_key_may_pull_and_only_a_catalog_model(peer: PeerNode) -> None:
    status, body = await peer.pull("big", key=peer.user)
    assert status == 403 and body[0]["error"]["code"] == "forbidden"
    status, body = await peer.pull("big", key="sk-wrong-key-1234")
    assert status == 401
    status, body = await peer.pull("nope")
    assert status == 404 and body[0]["error"]["code"] == "model_not_found"
    status, body = await peer.pull("..%2F..%2Fetc")
    assert status in (400, 404) and body[0]["error"]["code"] in ("invalid_model_name", "model_not_found")
    assert not await asyncio.to_thread((peer.hf_cache / "hub").exists)  # nothing fetched for any


async def test_a_second_pull_of_the_same_model_follows_the_first(peer: PeerNode, hub: FakeHub) -> None:
    hub.hold.add("config.json")  # the first pull waits on this file until released
    first = asyncio.create_task(peer.pull("big"))
    assert await asyncio.to_thread(hub.held.wait, 30)
    # The second's answer has begun (its headers are here) once it follows the running pull.
    headers = {"Authorization": f"Bearer {peer.admin}"}
    second = await peer.client.post("/api/v1/models/big/pull", headers=headers)
    hub.release()
    _, one = await first
    two = [json.loads(line) for line in (await second.text()).splitlines()]
    assert one == two and one[-1]["event"] == "done"
    assert len(hub.gets("config.json")) == 1  # one download between them


async def test_a_caller_that_goes_away_leaves_the_pull_running(peer: PeerNode, hub: FakeHub) -> None:
    hub.hold.add("config.json")
    headers = {"Authorization": f"Bearer {peer.admin}"}
    first = await peer.client.post("/api/v1/models/big/pull", headers=headers)
    assert json.loads(await first.content.readline())["event"] == "line"
    assert await asyncio.to_thread(hub.held.wait, 30)
    first.close()  # the caller's connection is gone mid-pull
    again = await peer.client.post("/api/v1/models/big/pull", headers=headers)
    hub.release()
    events = [json.loads(line) for line in (await again.text()).splitlines()]
    # The same pull, from its first line: the plan said what was to download, none of it yet there.
    total = human_bytes(sum(len(d) for d in MODEL_FILES.values()))
    assert f"{total}; {total} to download" in events[0]["text"], events[0]
    assert events[-1]["event"] == "done" and len(hub.gets("config.json")) == 1


async def test_a_peer_reports_its_images(
    peer: PeerNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(
        _fake_podman, tmp_path, monkeypatch, present={"localhost/sparkctl-present:latest"}
    )
    r = await peer.client.get("/api/v1/images", headers={"Authorization": f"Bearer {peer.admin}"})
    assert r.status == 200
    assert await r.json() == [
        {
            "node": "spark-b",
            "image": "localhost/sparkctl-present:latest",
            "state": "present",
            "models": ["small"],
            "note": "",
        },
        {
            "node": "spark-b",
            "image": "nvcr.io/nvidia/vllm:absent",
            "state": "missing",
            "models": ["other"],
            "note": "",
        },
    ]
    r = await peer.client.get("/api/v1/images", headers={"Authorization": f"Bearer {peer.user}"})
    assert r.status == 403


def _fake_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, present: set[str]) -> None:
    """`podman image exists IMAGE` answering from `present`; nothing else."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "podman"
    cases = "\n".join(f'  "{image}") exit 0 ;;' for image in sorted(present))
    script.write_text(
        f'#!/bin/sh\n[ "$1 $2" = "image exists" ] || exit 125\ncase "$3" in\n{cases}\nesac\nexit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


# ------------------------------------------------------------------------------------ the CLI side
def _owner_config(tmp_path: Path, peer_url: str, key: str) -> Path:
    base = tmp_path / "spark-a"
    _catalog(base / "models")
    (base / "spark-b.key").parent.mkdir(parents=True, exist_ok=True)
    (base / "spark-b.key").write_text(key + "\n")
    config = base / "sparkctl.toml"
    config.write_text(
        f'[catalog]\ndirs = ["{base / "models"}"]\n[runtime]\nhf_cache = "{base / "hf"}"\n'
        '[cluster]\nnode = "spark-a"\n'
        f'[[cluster.peers]]\nname = "spark-b"\nurl = "{peer_url}"\napi_key_file = "{base / "spark-b.key"}"\n'
    )
    return config


async def _sparkctl(*args: str) -> Result:
    # In a thread: the CLI's client is synchronous, and the peer's gateway runs on this loop.
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


async def test_pull_of_a_spanning_model_fills_every_node_it_spans(peer: PeerNode, tmp_path: Path) -> None:
    config = await asyncio.to_thread(_owner_config, tmp_path, peer.url, peer.admin)
    result = await _sparkctl("--config", str(config), "pull", "--no-image", "big")
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout == "big: ready\n"
    assert "big spans spark-a, spark-b: pulling on every one of them" in result.stderr
    assert f"spark-b: org/big@main is commit {COMMIT[:12]}" in result.stderr
    assert f"spark-a: org/big@main is commit {COMMIT[:12]}" in result.stderr
    assert "spark-b: big ready" in result.stderr
    assert await asyncio.to_thread(weights_present, tmp_path / "spark-a" / "hf", "org/big")
    assert await asyncio.to_thread(weights_present, peer.hf_cache, "org/big")


async def test_a_peer_that_does_not_answer_is_named_and_the_pull_can_be_rerun(
    tmp_path: Path, hub: FakeHub
) -> None:
    hub.repos["org/big"] = FakeRepo(files={COMMIT: dict(MODEL_FILES)}, refs={"main": COMMIT})
    port = free_port()  # nothing listens there
    config = await asyncio.to_thread(_owner_config, tmp_path, f"http://127.0.0.1:{port}", "sk-b-admin-key")
    result = await _sparkctl("--config", str(config), "pull", "--no-image", "big")
    assert result.exit_code == 1 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: spark-b does not answer at http://127.0.0.1:{port}: ")
    assert last.endswith(
        "its weights are not pulled there; run `sparkctl pull big` again once it answers: a pull "
        "resumes where it stopped"
    )
    # This node's pull went on.
    assert await asyncio.to_thread(weights_present, tmp_path / "spark-a" / "hf", "org/big")


async def test_an_image_a_node_lacks_is_named_with_the_command_to_run_there(
    peer: PeerNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(_fake_podman, tmp_path, monkeypatch, present=set())
    _, events = await peer.pull("big-image")
    assert events[-1]["event"] == "done" and events[-1]["missing"] == [
        {
            "what": "image",
            "message": "image nvcr.io/nvidia/vllm:absent is not on this host: run sparkctl pull big-image",
        }
    ]
    config = await asyncio.to_thread(_owner_config, tmp_path, peer.url, peer.admin)
    # The weights alone: ready on both nodes.
    weights = await _sparkctl("--config", str(config), "pull", "--no-image", "big-image")
    assert weights.exit_code == 0, weights.stderr
    # With the image: this node cannot reach Podman's API here, and spark-b says what it lacks.
    result = await _sparkctl("--config", str(config), "pull", "big-image")
    assert result.exit_code == 1 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (
        "error: on spark-b, image nvcr.io/nvidia/vllm:absent is not on this host: run sparkctl pull big-image"
        in errors
    )
    assert any(line.startswith("error: on spark-a, ") for line in errors), errors


def test_a_spanning_model_without_its_nodes_says_what_the_cluster_lacks(tmp_path: Path) -> None:
    _catalog(tmp_path / "models")
    config = tmp_path / "sparkctl.toml"
    config.write_text(
        f'[catalog]\ndirs = ["{tmp_path / "models"}"]\n[runtime]\nhf_cache = "{tmp_path / "hf"}"\n'
        '[cluster]\nnode = "spark-a"\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "pull", "--no-image", "big"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(
        "error: cannot pull big on the nodes it spans: spans 2 nodes, but the cluster has 1 (spark-a)"
    ), result.stderr
    assert not (tmp_path / "hf" / "hub").exists()  # nothing fetched anywhere


async def test_an_image_the_daemon_cannot_check_is_said_not_counted_missing(
    peer: PeerNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a Spark: the daemon's user has no Podman store of its own to ask.
    bindir = tmp_path / "bin"
    await asyncio.to_thread(bindir.mkdir)
    script = bindir / "podman"
    await asyncio.to_thread(
        script.write_text, "#!/bin/sh\necho 'Error: no storage for user sparkctl' >&2\nexit 125\n"
    )
    await asyncio.to_thread(script.chmod, 0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    _, events = await peer.pull("big-image")
    assert events[-1]["event"] == "done" and events[-1]["missing"] == []
    assert events[-2] == {
        "event": "line",
        "text": "cannot tell whether image nvcr.io/nvidia/vllm:absent is here (Error: no storage for user "
        "sparkctl): check with `sudo podman image exists nvcr.io/nvidia/vllm:absent`",
    }


async def test_a_peer_that_refuses_the_key_is_named(peer: PeerNode, tmp_path: Path) -> None:
    config = await asyncio.to_thread(_owner_config, tmp_path, peer.url, peer.user)  # not an admin key
    result = await _sparkctl("--config", str(config), "pull", "--no-image", "big")
    assert result.exit_code == 1
    assert "error: spark-b: The key 'app' may not use the admin API." in result.stderr
    assert not await asyncio.to_thread(weights_present, peer.hf_cache, "org/big")


async def test_images_in_a_cluster_list_every_nodes(
    peer: PeerNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await asyncio.to_thread(
        _fake_podman, tmp_path, monkeypatch, present={"localhost/sparkctl-present:latest"}
    )
    config = await asyncio.to_thread(_owner_config, tmp_path, peer.url, peer.admin)
    result = await _sparkctl("--config", str(config), "images", "list", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    rows = json.loads(result.stdout)
    assert [(r["node"], r["image"]) for r in rows] == [
        ("spark-a", "localhost/sparkctl-present:latest"),
        ("spark-a", "nvcr.io/nvidia/vllm:absent"),
        ("spark-b", "localhost/sparkctl-present:latest"),
        ("spark-b", "nvcr.io/nvidia/vllm:absent"),
    ]
    theirs = {r["image"]: r for r in rows if r["node"] == "spark-b"}
    assert theirs["localhost/sparkctl-present:latest"]["state"] == "present"
    assert theirs["nvcr.io/nvidia/vllm:absent"]["state"] == "missing"
    assert theirs["nvcr.io/nvidia/vllm:absent"]["note"] == "on spark-b: sparkctl pull other"

    table = await _sparkctl("--config", str(config), "images", "list")
    assert table.exit_code == 0 and table.stdout.splitlines()[0].split()[:3] == ["NODE", "IMAGE", "SOURCE"]

    # A peer's key this user cannot read: this node's images, and a word on stderr.
    key = tmp_path / "spark-a" / "spark-b.key"
    await asyncio.to_thread(key.rename, key.with_name("elsewhere"))
    result = await _sparkctl("--config", str(config), "images", "list", "--json")
    assert result.exit_code == 0 and {r["node"] for r in json.loads(result.stdout)} == {"spark-a"}
    assert "note: the other nodes' images are not listed: cannot read the peers' keys" in result.stderr

    down = await asyncio.to_thread(_owner_config, tmp_path, f"http://127.0.0.1:{free_port()}", peer.admin)
    result = await _sparkctl("--config", str(down), "images", "list", "--json")
    assert result.exit_code == 0 and {r["node"] for r in json.loads(result.stdout)} == {"spark-a"}
    assert "note: spark-b does not answer" in result.stderr


# ---------------------------------------------------------------------------------------- units
def test_the_daemon_may_write_the_cache(tmp_path: Path) -> None:
    settings = Settings.model_validate({"runtime": {"hf_cache": str(tmp_path / "hf")}})
    service = own_units(settings, Path("/usr/bin/sparkctl"), Path("/etc/sparkctl/sparkctl.toml"))[0].text
    assert f"ReadWritePaths=-{tmp_path / 'hf'}\n" in service
    user = own_units(settings, Path("/usr/bin/sparkctl"), Path("/x.toml"), user=True)[0].text
    assert "ReadWritePaths" not in user  # a user's daemon writes its own cache anyway
