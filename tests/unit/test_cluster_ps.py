"""`sparkctl ps` in a cluster (BRIEF §9): a NODE column, the peers' models beside this node's, and
a word on stderr for a peer that does not answer; without peers, the table as before."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl.api import DaemonStatus, ModelStatus, PeerModel, PeerStatus
from sparkctl.cli import cli
from sparkctl.cli.app import Context
from sparkctl.client import Client
from sparkctl.core.states import ModelState


def _local(model_id: str, state: ModelState) -> ModelStatus:
    return ModelStatus(
        id=model_id,
        state=state,
        since=time.time() - 90,
        in_flight=2,
        waiting=0,
        idle_stop_at=None,
        failures=0,
        backoff_until=None,
        last_load_seconds=None,
        unit=f"sparkctl-{model_id}.service",
        gpu_memory_utilization=0.4,
        gpu="shared",
        pinned=False,
    )


def _status(peers: list[PeerStatus]) -> DaemonStatus:
    return DaemonStatus(
        version="0",
        started=time.time(),
        queue_depth=0,
        memory_budget=0.94,
        models=[_local("chat", ModelState.READY), _local("idle", ModelState.STOPPED)],
        node="spark-a",
        peers=peers,
    )


PEERS = [
    PeerStatus(
        name="spark-b",
        url="http://10.77.0.2:29201",
        available=True,
        checked=time.time(),
        answered=time.time(),
        error=None,
        models=[
            PeerModel(id="big", state="ready", available=True),
            PeerModel(id="other", state="stopped", available=True),
        ],
    ),
    PeerStatus(
        name="spark-c",
        url="http://10.77.0.3:29201",
        available=False,
        checked=time.time(),
        answered=None,
        error="timed out",
        models=[PeerModel(id="gone", state="unavailable", available=False)],
    ),
]


def _ps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: DaemonStatus, *args: str) -> tuple[str, str]:
    monkeypatch.setattr(Context, "reach_daemon", lambda self: None)  # this host's daemon: the fake
    monkeypatch.setattr(Client, "status", lambda self: status)
    (tmp_path / "c.toml").write_text("")
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "c.toml"), "ps", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_a_cluster_gets_a_node_column_and_the_peers_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out, err = _ps(monkeypatch, tmp_path, _status(PEERS))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "NODE", "STATE"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows == {
        "chat": ["spark-a", "ready"],
        "big": ["spark-b", "ready"],
        "gone": ["spark-c", "unavailable"],
    }
    assert "node spark-c (http://10.77.0.3:29201) does not answer: timed out" in err
    out, _ = _ps(monkeypatch, tmp_path, _status(PEERS), "-a", "--json")
    nodes = {row["id"]: (row["node"], row["state"]) for row in json.loads(out)}
    assert nodes == {
        "chat": ("spark-a", "ready"),
        "idle": ("spark-a", "stopped"),
        "big": ("spark-b", "ready"),
        "other": ("spark-b", "stopped"),
        "gone": ("spark-c", "unavailable"),
    }


def test_one_spark_has_no_node_column(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out, err = _ps(monkeypatch, tmp_path, _status([]))
    assert out.splitlines()[0].split()[:2] == ["MODEL", "STATE"] and "NODE" not in out
    assert err == ""
    out, _ = _ps(monkeypatch, tmp_path, _status([]), "--json")
    assert "node" not in json.loads(out)[0]
