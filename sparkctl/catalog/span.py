"""A model that spans Sparks (BRIEF §9, #15): which part of it runs on this node, and what that
part is told — the flags, the environment and the start script of vLLM's multi-node forms.

The same catalog file sits on every node the model spans; `serve.owner` names the node that runs
the head. The nodes it spans are the owner (rank 0) and then the cluster's other nodes by name,
as many as `serve.nodes` asks: every node computes the same ranks from the same cluster. Pure:
the renderer (units/render.py) and the cross-checks call it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sparkctl.catalog.spec import ModelSpec
from sparkctl.settings import ClusterSettings

# The RDMA devices NCCL uses over the QSFP link (GPUDirect RDMA), as vLLM's multi-node recipes
# pass them to the container.
RDMA_DEVICES = "/dev/infiniband"
# Ray's start, in the container or unit before vLLM (the head) or instead of it (a worker). The
# addresses and ports come from the environment (SPAN_ENV), values the renderer checked, so no
# value is ever spliced into shell text. `--disable-usage-stats`: nothing leaves the host.
RAY_HEAD_SCRIPT = (
    "ray start --head --node-ip-address=$VLLM_HOST_IP --port=$SPARKCTL_RAY_PORT "
    '--disable-usage-stats && exec "$@"'
)
RAY_WORKER_SCRIPT = (
    "exec ray start --block --address=$SPARKCTL_RAY_HEAD --node-ip-address=$VLLM_HOST_IP "
    "--disable-usage-stats"
)
RAY_SCRIPT_NAME = "sparkctl-ray"  # $0 of the script, shown in ps and the journal


class SpanError(ValueError):
    """The cluster cannot run this spanning model as configured (a cross-check reports it)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One node's part of a spanning model."""

    role: Literal["head", "worker"]
    rank: int  # 0 for the head
    nodes: tuple[str, ...]  # the nodes it spans, by rank
    multinode: Literal["ray", "native"]
    interface: str
    own_address: str  # this node's link address: VLLM_HOST_IP
    head_address: str  # the owner's link address: Ray's address, --master-addr
    addresses: tuple[str, ...]  # every spanned node's link address, by rank
    head_port: int  # Ray's
    master_port: int  # vLLM's own multi-node mode's

    @property
    def headless(self) -> bool:
        return self.role == "worker"


def spanned_nodes(spec: ModelSpec, cluster: ClusterSettings) -> tuple[str, ...]:
    """The nodes a spanning model runs on, by rank: its owner, then the others by name."""
    owner = spec.serve.owner
    if owner is None:
        raise SpanError(
            "a model that spans nodes needs serve.owner: the node (cluster.node) that runs its head"
        )
    everyone = {cluster.node, *(p.name for p in cluster.peers)}
    if owner not in everyone:
        raise SpanError(
            f"serve.owner {owner!r} is neither this node ({cluster.node}) nor one of its peers "
            f"({', '.join(sorted(everyone - {cluster.node})) or 'none'})"
        )
    others = sorted(everyone - {owner})
    if len(others) + 1 < spec.serve.nodes:
        raise SpanError(
            f"spans {spec.serve.nodes} nodes, but the cluster has {len(everyone)} "
            f"({', '.join([cluster.node, *(p.name for p in cluster.peers)])}): add its peers to "
            "[cluster] peers (docs/cluster.md)"
        )
    return (owner, *others[: spec.serve.nodes - 1])


def part(spec: ModelSpec, cluster: ClusterSettings) -> Part | None:
    """This node's part of a spanning model, or None where it spans other nodes only. Raises
    SpanError naming what the cluster's configuration lacks."""
    nodes = spanned_nodes(spec, cluster)
    if cluster.node not in nodes:
        return None
    if cluster.interface is None:
        raise SpanError(
            "a model that spans nodes needs cluster.interface: the NIC of the Sparks' direct link, "
            "which NCCL, Gloo, UCX and Ray are told to use"
        )
    if cluster.address is None:
        raise SpanError(
            "a model that spans nodes needs cluster.address: this node's IP address on the "
            "Sparks' direct link (VLLM_HOST_IP)"
        )
    by_name = {p.name: p for p in cluster.peers}
    addresses = []
    for name in nodes:
        address = cluster.address if name == cluster.node else by_name[name].link_address
        if address is None:
            raise SpanError(
                f"peer {name!r} has no link address: set its address (cluster.peers) to its IP on "
                "the direct link, or give its url as that IP"
            )
        addresses.append(address)
    rank = nodes.index(cluster.node)
    return Part(
        role="head" if rank == 0 else "worker",
        rank=rank,
        nodes=nodes,
        multinode=spec.serve.multinode,
        interface=cluster.interface,
        own_address=cluster.address,
        head_address=addresses[0],
        addresses=tuple(addresses),
        head_port=cluster.head_port,
        master_port=cluster.master_port,
    )


def fingerprint(spec: ModelSpec) -> str:
    """What every node a spanning model spans must agree on: its catalog entry, as parsed (a
    digest; nodes on the same sparkctl parse the same file to the same text)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def serves_here(spec: ModelSpec, cluster: ClusterSettings) -> bool:
    """Whether this node takes the model's requests itself (its own port, a preload): any model
    that does not span nodes, and the head of one that does."""
    if spec.serve.nodes == 1:
        return True
    p = part(spec, cluster)
    return p is not None and p.role == "head"


def owners(specs: Iterable[ModelSpec], cluster: ClusterSettings) -> dict[str, str]:
    """Model → its owner, for each enabled spanning model this node does not serve itself (it
    runs a worker part of it, or no part at all): requests for it are the owner's to serve."""
    out = {}
    for spec in specs:
        if spec.enabled and spec.serve.nodes > 1 and not serves_here(spec, cluster):
            out[spec.id] = spanned_nodes(spec, cluster)[0]
    return out


def parallel_sizes(spec: ModelSpec) -> tuple[int, int]:
    """(tensor, pipeline) parallel sizes: as the catalog says, else tensor parallel over every
    node (NVIDIA's two-Spark recipe: --tensor-parallel-size 2). The catalog checked that they
    multiply to serve.nodes."""
    pp = spec.engine.pipeline_parallel_size or 1
    tp = spec.engine.tensor_parallel_size or spec.serve.nodes // pp
    return tp, pp


def vllm_flags(spec: ModelSpec, p: Part) -> list[str]:
    """The flags after the catalog's own that make vLLM one part of the model. The typed
    parallel sizes render themselves (catalog/flags.py); a default is said here."""
    tp, _ = parallel_sizes(spec)
    out = [] if spec.engine.tensor_parallel_size is not None else ["--tensor-parallel-size", str(tp)]
    if p.multinode == "ray":
        return [*out, "--distributed-executor-backend", "ray"]
    out += [
        "--nnodes",
        str(len(p.nodes)),
        "--node-rank",
        str(p.rank),
        "--master-addr",
        p.head_address,
        "--master-port",
        str(p.master_port),
    ]
    return [*out, "--headless"] if p.headless else out


def environment(p: Part) -> dict[str, str]:
    """What every part is told (NVIDIA's two-Spark playbook): its own address, and the link's
    interface for NCCL, Gloo, UCX, torch's TensorPipe and Open MPI."""
    env = {
        "VLLM_HOST_IP": p.own_address,
        "MASTER_ADDR": p.head_address,
        "NCCL_SOCKET_IFNAME": p.interface,
        "GLOO_SOCKET_IFNAME": p.interface,
        "TP_SOCKET_IFNAME": p.interface,
        "UCX_NET_DEVICES": p.interface,
        "OMPI_MCA_btl_tcp_if_include": p.interface,
    }
    if p.multinode == "ray":
        # Ray's memory monitor kills workers under unified-memory pressure it misreads (the
        # playbook turns it off).
        env["RAY_memory_monitor_refresh_ms"] = "0"
        if p.role == "head":
            env["SPARKCTL_RAY_PORT"] = str(p.head_port)
        else:
            env["SPARKCTL_RAY_HEAD"] = f"{_host(p.head_address)}:{p.head_port}"
    else:
        env["MASTER_PORT"] = str(p.master_port)
    return env


def ray_wrapper(p: Part) -> list[str]:
    """The argv prefix that starts Ray first: the head's then execs vLLM (the words after it),
    a worker's runs Ray alone."""
    script = RAY_HEAD_SCRIPT if p.role == "head" else RAY_WORKER_SCRIPT
    return ["/bin/sh", "-c", script, RAY_SCRIPT_NAME]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
