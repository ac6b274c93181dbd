"""A cluster of sandboxed Sparks, for `sparkctl demo --nodes N` and the integration tests (#15):
one box per node, each a real systemd in its own network namespace, joined by veth pairs that
stand for the QSFP link (link.py), each with sparkctl installed as `sparkctl install` installs it
on a host and configured as docs/cluster.md tells an owner: every node a peer of every other,
each holding an admin key of each other's.

The caller writes each node's catalog (`models`) before the daemons are installed; the link's
addresses are inside the namespaces made here, never on the host's network.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.errors import SandboxError
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.link import INTERFACE, Network, join

DIR = "cluster"  # each node's files, under its box: configuration, catalog, caches, peers' keys


@dataclass
class Node:
    name: str
    box: Box
    address: str  # on the link
    sparkctl: str
    key: str = ""  # an admin key of its own daemon (install printed it)

    @property
    def base(self) -> Path:
        return self.box.path / DIR

    @property
    def config(self) -> Path:
        return self.base / "sparkctl.toml"

    @property
    def catalog(self) -> Path:
        return self.base / "models"

    @property
    def hf_cache(self) -> Path:
        return self.base / "hf"

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`sparkctl --config CONFIG ARGS` inside the node."""
        return self.box.run(self.sparkctl, "--config", str(self.config), *args, check=check, timeout=timeout)

    def netns(self, *argv: str) -> list[str]:
        """`argv` in the node's network namespace only (on the host's files): a client of its
        loopback."""
        assert self.box.init_pid is not None
        return ["nsenter", "-t", str(self.box.init_pid), "-n", "--", *argv]


@dataclass
class Cluster:
    nodes: list[Node]
    network: Network
    installed: list[Node] = field(default_factory=list)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def down(self) -> None:
        """Uninstall sparkctl on every node (its units stopped), then power every box off."""
        for node in self.installed:
            with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                node.run("uninstall", check=False)
        for node in self.nodes:
            shutil.rmtree(node.base, ignore_errors=True)
            node.box.down()


def config_text(node: Node, peers: Sequence[Node], port: int, extra: str = "", tables: str = "") -> str:
    """A node's sparkctl.toml: its gateway on its loopback and on the link, its peers by their
    link addresses (docs/cluster.md, "Two Sparks, step by step"). `extra`: more [cluster] keys;
    `tables`: more tables, after it."""
    lines = [
        "[gateway]",
        f'listen = ["127.0.0.1:{port}", "{node.address}:{port}"]',
        'shutdown_grace = "5s"',
        "[catalog]",
        f'dirs = ["{node.catalog}"]',
        "[runtime]",
        'container_network = "host"',
        f'sparkctl = "{node.sparkctl}"',
        f'hf_cache = "{node.hf_cache}"',
        f'compile_cache = "{node.base / "compile"}"',
        "[cluster]",
        f'node = "{node.name}"',
        f'interface = "{INTERFACE}"',
        f'address = "{node.address}"',
        'poll_interval = "1s"',
        'connect_timeout = "1s"',
        'poll_timeout = "2s"',
        *([extra] if extra else []),
    ]
    for peer in peers:
        lines += [
            "[[cluster.peers]]",
            f'name = "{peer.name}"',
            f'url = "http://{peer.address}:{port}"',
            f'api_key_file = "{node.base / "peers" / peer.name}"',
        ]
    if tables:
        lines.append(tables)
    return "\n".join(lines) + "\n"


def up(
    names: Sequence[str],
    *,
    boxes: str,
    port: int,
    models: Callable[[Node], None],
    prefix: str = "10.77.0",
    extra: str = "",
    tables: str = "",
    before_install: Callable[[Box], None] | None = None,
) -> Cluster:
    """Boot one box per name (`boxes` + its index names them), link them, write each node's
    catalog (`models(node)`) and configuration, install sparkctl on each and exchange the
    peers' keys. Everything booted is torn down again if any step fails."""
    sparkctl = str(Path(sys.executable).parent / "sparkctl")
    booted: list[Box] = []
    cluster: Cluster | None = None
    try:
        for i in range(len(names)):
            booted.append(Box.up(name=f"{boxes}{i}", net="private"))
        network = join(booted, prefix)
        nodes = [
            Node(name, box, network.address(i), sparkctl)
            for i, (name, box) in enumerate(zip(names, booted, strict=True))
        ]
        cluster = Cluster(nodes, network)
        for node in nodes:
            for d in (node.catalog, node.hf_cache, node.base / "compile", node.base / "peers"):
                d.mkdir(parents=True, exist_ok=True)
            models(node)
            if before_install is not None:
                before_install(node.box)
            others = [p for p in nodes if p is not node]
            node.config.write_text(config_text(node, others, port, extra, tables))
            proc = node.run("install", check=False, timeout=300)
            if proc.returncode != 0:
                raise SandboxError(f"sparkctl install failed on {node.name}:\n{proc.stderr}")
            cluster.installed.append(node)
            node.key = proc.stdout.strip()
        # Each node holds an admin key of every other's; install again gives those files to its
        # daemon's group, and the daemon starts with them.
        for node in nodes:
            for peer in nodes:
                if peer is not node:
                    (node.base / "peers" / peer.name).write_text(peer.key + "\n")
            proc = node.run("install", check=False, timeout=300)
            if proc.returncode != 0:
                raise SandboxError(f"sparkctl install failed on {node.name}:\n{proc.stderr}")
        return cluster
    except BaseException:
        if cluster is not None:
            cluster.down()
        else:
            for box in booted:
                box.down()
        raise
