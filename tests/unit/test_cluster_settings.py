"""`[cluster]` (BRIEF §9, #15): names and defaults, the checks on peers, and the peers' key files,
read when the daemon starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sparkctl.errors import ConfigError
from sparkctl.gateway.peers import read_peers
from sparkctl.settings import Settings, load_settings


def _config(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "sparkctl.toml"
    cfg.write_text(text)
    return cfg


def _errors(cfg: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    return [str(i) for i in exc.value.issues]


def test_defaults_match_the_brief() -> None:
    cluster = Settings().cluster
    assert cluster.node == socket.gethostname().lower()
    assert cluster.peers == [] and cluster.interface is None and cluster.head_port == 6379
    assert not cluster.enabled


@pytest.mark.parametrize(
    ("hostname", "node"),
    [
        ("Spark-A", "spark-a"),
        ("spark-a.lan", "spark-a.lan"),
        ("x" * 70 + ".example.org", "x" * 64),
        ("_", "localhost"),
    ],
)
def test_the_default_node_is_the_hostname_made_to_fit(
    monkeypatch: pytest.MonkeyPatch, hostname: str, node: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    assert Settings().cluster.node == node


def test_a_cluster_of_two_with_relative_key_files(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        '[cluster]\nnode = "spark-a"\ninterface = "enp1s0f1np1"\nhead_port = 29210\n'
        '[[cluster.peers]]\nname = "spark-b"\nurl = "http://10.77.0.2:8009/"\napi_key_file = "keys/b"\n',
    )
    cluster = load_settings(cfg).cluster
    assert cluster.node == "spark-a" and cluster.enabled
    assert cluster.interface == "enp1s0f1np1" and cluster.head_port == 29210
    (peer,) = cluster.peers
    assert (peer.name, peer.url, peer.api_key_file) == (
        "spark-b",
        "http://10.77.0.2:8009",
        tmp_path / "keys/b",
    )


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ('name = "spark-a"', "'spark-a' is this node's own name (cluster.node): a peer is another Spark"),
        ('name = "Spark B"', "must match ^[a-z0-9][a-z0-9._-]{0,63}$"),
        ('name = "../b"', "must match ^[a-z0-9][a-z0-9._-]{0,63}$"),
        ('url = "http://10.77.0.2:8009/v1"', 'must be "http://HOST:PORT"'),
        ('url = "http://10.77.0.2"', 'must be "http://HOST:PORT"'),
        ('url = "http://user:secret@10.77.0.2:8009"', 'must be "http://HOST:PORT"'),
        ('url = "ftp://10.77.0.2:8009"', 'must be "http://HOST:PORT"'),
        ('url = "http://bad_host:8009"', 'must be "http://HOST:PORT"'),
        ("secret = 1", "unknown key (allowed: address, api_key_file, name, url)"),
    ],
)
def test_a_bad_peer_is_named_with_its_field(tmp_path: Path, peer: str, message: str) -> None:
    fields = {"name": '"spark-b"', "url": '"http://10.77.0.2:8009"', "api_key_file": '"/k"'}
    key = peer.split(" = ")[0]
    fields[key] = peer.split(" = ", 1)[1]
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    cfg = _config(tmp_path, f'[cluster]\nnode = "spark-a"\n[[cluster.peers]]\n{body}\n')
    (line,) = _errors(cfg)
    assert line.startswith(f"{cfg}: cluster.peers"), line
    assert message in line, line


def test_two_peers_of_one_name_and_bad_node_and_interface(tmp_path: Path) -> None:
    peer = '[[cluster.peers]]\nname = "b"\nurl = "http://10.77.0.2:8009"\napi_key_file = "/k"\n'
    cfg = _config(tmp_path, f'[cluster]\nnode = "a"\n{peer}{peer}')
    assert _errors(cfg) == [f"{cfg}: cluster.peers.1.name: 'b' is named twice"]
    cfg = _config(tmp_path, '[cluster]\nnode = "A/b"\ninterface = "eth0; rm"\nhead_port = 0\n')
    lines = _errors(cfg)
    assert [line.split(": ")[1] for line in lines] == [
        "cluster.node",
        "cluster.interface",
        "cluster.head_port",
    ]


def test_peer_keys_are_read_at_startup_and_a_missing_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "b.key").write_text("sk-spark-bbbbbbbbbbbb\n")
    (tmp_path / "c.key").write_text("two words\n")
    peers = "".join(
        f'[[cluster.peers]]\nname = "{n}"\nurl = "http://10.77.0.{i}:8009"\napi_key_file = "{n}.key"\n'
        for i, n in enumerate(["b", "c", "d"], start=2)
    )
    cluster = load_settings(_config(tmp_path, f'[cluster]\nnode = "a"\n{peers}')).cluster
    with pytest.raises(ConfigError) as exc:
        read_peers(cluster)
    assert [str(i) for i in exc.value.issues] == [
        f"{tmp_path / 'c.key'}: cluster.peers[1].api_key_file: must hold one admin key of c's (what "
        "`sparkctl keys add NAME --admin` printed there), alone",
        f"{tmp_path / 'd.key'}: cluster.peers[2].api_key_file: cannot read d's key: No such file or directory",
    ]
    (tmp_path / "c.key").write_text("sk-spark-cccccccccccc")
    (tmp_path / "d.key").write_text("sk-spark-dddddddddddd")
    read = read_peers(cluster)
    assert [(p.name, str(p.url), p.key) for p in read] == [
        ("b", "http://10.77.0.2:8009", "sk-spark-bbbbbbbbbbbb"),
        ("c", "http://10.77.0.3:8009", "sk-spark-cccccccccccc"),
        ("d", "http://10.77.0.4:8009", "sk-spark-dddddddddddd"),
    ]
