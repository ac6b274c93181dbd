"""The relay to a peer node (#15, #18): what a request for a model another node of a cluster serves
costs beyond the same request on that node.

A second `sparkctl serve` (node `bench-front`) runs beside the benchmark's daemon, on loopback,
with an empty catalog and the benchmark's daemon as its one peer ([cluster] peers: a URL and an
admin key of the peer's), so the fast emulated model is a peer's model to it and every request
for it is relayed. Three targets, rounds interleaved, the same small chat request as the gateway
scenario: `direct` (the engine), `sparkctl` (the model's own node), `relay` (the other node,
which relays to the model's node). At 1 client: latency added to direct, and what the relay adds
beyond the local path; at 16: throughput against direct.

Both daemons, the engine and nothing else share the servers' core (the gateway scenario's
layout); the load generator has its own. On two Sparks the relay's hop crosses the 200 GbE link
instead of loopback, and each daemon has cores of its own: the figures here bound the relay's
own CPU cost, not the link's latency.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sparkctl.sandbox.host import spare_port
from sparkctl.settings import default_node

from ..loadgen import run_wrk, wrk_script
from ..procs import Child, wait_for
from ..stack import SPARKCTL, Stack, to_toml
from ..stats import median, rotate
from . import FAST, MESSAGES, Context, Target
from .gateway import measured

NODE = "bench-front"  # the relaying node's name
CLIENTS = (1, 16)
TARGETS = ("direct", "sparkctl", "relay")


class Front:
    """The second node: a daemon whose only models are its peer's."""

    def __init__(self, stack: Stack, work: Path, cpus: frozenset[int] | None) -> None:
        assert stack.box is not None
        base = work / "relay-front"
        for d in ("models", "quadlet", "units", "state", "hf", "compile"):
            (base / d).mkdir(parents=True, exist_ok=True)
        peer_key = base / "peer.key"
        peer_key.write_text(stack.key + "\n")
        peer_key.chmod(0o600)
        self.port = spare_port()
        self.peer = default_node()  # the benchmark's daemon leaves cluster.node at its default
        config = base / "sparkctl.toml"
        config.write_text(
            to_toml(
                {
                    "gateway": {
                        "listen": [f"127.0.0.1:{self.port}"],
                        "auth": "required",
                        # The benchmark's key file: its key is good on both nodes.
                        "api_keys_file": str(stack.work / "api-keys"),
                    },
                    "catalog": {"dirs": [str(base / "models")]},
                    "systemd": {
                        "bus": stack.box.bus_address,
                        "quadlet_dir": str(base / "quadlet"),
                        "unit_dir": str(base / "units"),
                    },
                    "runtime": {
                        "sparkctl": SPARKCTL,
                        "hf_cache": str(base / "hf"),
                        "compile_cache": str(base / "compile"),
                        "state_dir": str(base / "state"),
                    },
                    "cluster": {"node": NODE},
                }
            )
            + f'\n[[cluster.peers]]\nname = "{self.peer}"\nurl = "{stack.url}"\n'
            f'api_key_file = "{peer_key}"\n'
        )
        self.child = Child(
            "sparkctl-front", [SPARKCTL, "--config", str(config), "serve"], log=base / "daemon.log", cpus=cpus
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._lists(stack), 30, f"{NODE} to list its peer's {FAST}")

    def _lists(self, stack: Stack) -> bool:
        """Up, and its peer's fast model listed as available from it."""
        import urllib.error
        import urllib.request

        if not self.child.alive():
            raise RuntimeError(f"{NODE}'s sparkctl serve exited:\n{self.child.log_tail()}")
        req = urllib.request.Request(f"{self.url}/v1/models/{FAST}", headers=stack.auth)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                entry = json.loads(r.read())
        except (OSError, urllib.error.HTTPError):
            return False
        return bool(entry.get("node") == self.peer and entry.get("available"))

    def stop(self) -> None:
        self.child.stop()


def run(ctx: Context) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    stack.complete(FAST)  # the scenarios before it may have swapped it out (exclusive models)
    engine_pids = stack.pin_engine(FAST)
    front = Front(stack, ctx.work, ctx.plan.servers)
    try:
        tgts = [
            Target("direct", stack.engine_port(FAST), ()),
            Target("sparkctl", stack.port, tuple(stack.daemon_pids())),
            Target("relay", front.port, (front.child.pid, *stack.daemon_pids())),
        ]
        result = _measure(ctx, tgts, engine_pids)
        result["front_log_tail"] = front.child.log_tail(20)
    finally:
        front.stop()
    result["leases_left"] = stack.leases_left(FAST)
    result["layout"] = (
        f"both daemons and the engine on CPU {','.join(map(str, sorted(ctx.plan.servers or [])))}; "
        f"the load generator on CPU {','.join(map(str, sorted(ctx.plan.loadgen or [])))}"
    )
    result["rounds"] = prof.rounds
    result["wrk_seconds"] = prof.wrk_seconds
    return result


def _measure(ctx: Context, tgts: list[Target], engine_pids: list[int]) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    body = json.dumps({"model": FAST, "messages": MESSAGES, "max_tokens": 16}, separators=(",", ":")).encode()
    script = wrk_script(ctx.work, body, stack.auth)
    url = "http://127.0.0.1:{port}/v1/chat/completions"
    for t in tgts:  # warm every path (the relay's connections to its peer too) before anything counts
        run_wrk(url.format(port=t.port), script, 16, prof.wrk_warmup_seconds, ctx.plan.loadgen)
    raw: list[dict[str, Any]] = []
    by_name = {t.name: t for t in tgts}
    for rnd in range(prof.rounds):
        for clients in CLIENTS:
            for name in rotate(list(TARGETS), rnd):
                t = by_name[name]
                raw.append(
                    measured(t, url, script, clients, prof.wrk_seconds, ctx.plan.loadgen, engine_pids, rnd)
                )
    return {
        "load_generator": "wrk 1 thread, keep-alive connections = clients, POST body from a Lua script",
        "request_body_bytes": len(body),
        "targets": list(TARGETS),
        "raw": raw,
        "summary": summarize(raw),
    }


Run = dict[str, Any]


def _paired(raw: list[Run], name: str, base: str, clients: int) -> list[tuple[Run, Run]]:
    basis = {r["round"]: r for r in raw if r["target"] == base and r["clients"] == clients}
    return [
        (r, basis[r["round"]])
        for r in raw
        if r["target"] == name and r["clients"] == clients and r["round"] in basis
    ]


def summarize(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per target and client count: medians over rounds; added latency and the throughput ratio
    paired per round against `direct`, and the relay's against the local path (`sparkctl`)."""
    rows = []
    for c in CLIENTS:
        for name in TARGETS:
            runs = [r for r in raw if r["target"] == name and r["clients"] == c]
            if not runs:
                continue
            row: dict[str, Any] = {"target": name, "clients": c, "rounds": len(runs)}
            for m in ("p50_ms", "p90_ms", "p99_ms", "rps", "proxy_cpu_us", "engine_cpu_us"):
                row[m] = median([r[m] for r in runs])
            row["errors"] = sum(sum(r["errors"].values()) for r in runs)
            for base, prefix in (("direct", "added"), ("sparkctl", "over_local")):
                pairs = _paired(raw, name, base, c)
                for m in ("p50_ms", "p90_ms"):
                    deltas = [r[m] - b[m] for r, b in pairs]
                    row[f"{prefix}_{m}"] = median(deltas) if deltas else math.nan
                ratios = [r["rps"] / b["rps"] for r, b in pairs if b["rps"]]
                row[f"{prefix}_rps_ratio"] = median(ratios) if ratios else math.nan
            rows.append(row)
    return rows
