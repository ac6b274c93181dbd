"""The doctor's check of a cluster's direct link (#15): the interface `cluster.interface` names
exists and is up, its MTU, and `cluster.address` on it — what NCCL, Gloo, UCX and Ray of a model
that spans Sparks are told to use. One Spark (no [cluster] peers, no interface) passes.
"""

from __future__ import annotations

from sparkctl.settings import Settings
from sparkctl.tools.doctor.check import Check, Status
from sparkctl.tools.doctor.host import Host

NAME = "cluster link"
JUMBO = 9000  # bytes: what docs/cluster.md advises for tensor traffic, on every end alike
FIND_PORT = "the QSFP port's name: `ibdev2netdev` shows which one is (Up)"


def check_link(host: Host, settings: Settings) -> Check:
    cluster = settings.cluster
    interface = cluster.interface
    if interface is None:
        if not cluster.peers:
            return Check(NAME, "pass", "no cluster configured: one Spark")
        return Check(
            NAME,
            "warn",
            "no cluster.interface: requests are relayed to the peers, but models that span Sparks "
            "cannot run (NCCL, Gloo, UCX and Ray need the direct link's interface)",
            f"set cluster.interface to {FIND_PORT}",
        )
    sys_dir = f"/sys/class/net/{interface}"
    if not host.path(sys_dir).is_dir():
        return Check(
            NAME, "fail", f"no network interface {interface} (cluster.interface)", f"set it to {FIND_PORT}"
        )
    state = (host.read(f"{sys_dir}/operstate") or "unknown").strip()
    if state != "up":
        return Check(
            NAME,
            "fail",
            f"{interface} is {state}: no link to the other Sparks",
            "check the QSFP cable (both ends seated) and `ip link set " + interface + " up`",
        )
    found: list[tuple[Status, str, str | None]] = []
    if cluster.address is not None:
        out = host.run(["ip", "-o", "addr", "show", "dev", interface])
        words = out.stdout.split() if out is not None and out.returncode == 0 else []
        if not any(w.split("/")[0] == cluster.address for w in words):
            found.append(
                (
                    "fail",
                    f"cluster.address {cluster.address} is not an address of {interface}",
                    f"address {interface} as {cluster.address}/24 (netplan or NetworkManager, persistent), "
                    "or set cluster.address to its address",
                )
            )
    mtu_text = (host.read(f"{sys_dir}/mtu") or "").strip()
    mtu = int(mtu_text) if mtu_text.isdigit() else None
    if mtu is not None and mtu < JUMBO:
        found.append(
            (
                "warn",
                f"{interface} has MTU {mtu}: jumbo frames ({JUMBO}) carry the tensor traffic of models "
                "that span Sparks better",
                f"set MTU {JUMBO} on {interface} on every Spark alike (and on a switch between them)",
            )
        )
    if not found:
        return Check(NAME, "pass", f"{interface} is up, MTU {mtu}" + _at(settings))
    worst: Status = "fail" if any(s == "fail" for s, _, _ in found) else "warn"
    fixes = [f for _, _, f in found if f]
    return Check(NAME, worst, "; ".join(d for _, d, _ in found), "; ".join(fixes) or None)


def _at(settings: Settings) -> str:
    address = settings.cluster.address
    return f", {address} on it" if address is not None else ""
