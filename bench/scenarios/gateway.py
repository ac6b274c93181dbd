"""Gateway overhead on small non-streaming requests: latency percentiles, requests/s and server
CPU per request at each client count, every target in every round, rounds interleaved."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..loadgen import run_wrk, wrk_script
from ..procs import cpu_seconds, pin
from ..stats import median, rotate
from . import FAST, MESSAGES, Context, Target, targets

METRICS = (
    "p50_ms",
    "p75_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "rps",
    "proxy_cpu_us",
    "engine_cpu_us",
)


def run(ctx: Context) -> dict[str, Any]:
    """The shared-core layout: every server on one core, the load generator on the other."""
    engine_pids = ctx.stack.pin_engine(FAST)
    return measure(ctx, engine_pids, ctx.profile.rounds)


def run_own_core(ctx: Context) -> dict[str, Any]:
    """The front on a core of its own, as on a Spark's twenty (#18): the engine moves to the load
    generator's core (wrk costs it little), every front keeps the servers' core to itself. Direct
    is measured in the same layout, so the ratios compare like with like."""
    plan = ctx.plan
    if plan.loadgen is None or plan.servers is None:
        raise RuntimeError("the own-core layout needs two cores")
    engine_pids = ctx.stack.engine_pids(FAST)
    pin(engine_pids, plan.loadgen)
    try:
        result = measure(ctx, engine_pids, ctx.profile.own_core_rounds)
    finally:
        pin(engine_pids, plan.servers)
    result["layout"] = (
        f"engine and load generator on CPU {','.join(map(str, sorted(plan.loadgen)))}; "
        f"the front alone on CPU {','.join(map(str, sorted(plan.servers)))}"
    )
    return result


def measure(ctx: Context, engine_pids: list[int], rounds: int) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    tgts = targets(ctx, stack.engine_port(FAST))
    body = json.dumps({"model": FAST, "messages": MESSAGES, "max_tokens": 16}, separators=(",", ":")).encode()
    script = wrk_script(ctx.work, body, stack.auth)
    url = "http://127.0.0.1:{port}/v1/chat/completions"
    for t in tgts:  # warm every path (connection pools, caches) before anything counts
        run_wrk(url.format(port=t.port), script, 16, prof.wrk_warmup_seconds, ctx.plan.loadgen)
    raw: list[dict[str, Any]] = []
    names = [t.name for t in tgts]
    by_name = {t.name: t for t in tgts}
    for rnd in range(rounds):
        for clients in prof.clients:
            for name in rotate(names, rnd):
                t = by_name[name]
                raw.append(
                    measured(t, url, script, clients, prof.wrk_seconds, ctx.plan.loadgen, engine_pids, rnd)
                )
    return {
        # wrk hangs up with requests in flight when its time is up: every one must end its lease.
        "leases_left": stack.leases_left(FAST),
        "load_generator": "wrk 1 thread, keep-alive connections = clients, POST body from a Lua script",
        "request_body_bytes": len(body),
        "wrk_seconds": prof.wrk_seconds,
        "rounds": rounds,
        "targets": names,
        "raw": raw,
        "summary": summarize(raw, names, prof.clients),
    }


def measured(
    t: Target,
    url: str,
    script: Path,
    clients: int,
    seconds: int,
    loadgen: frozenset[int] | None,
    engine_pids: list[int],
    rnd: int,
) -> dict[str, Any]:
    """One wrk run against `t` with the CPU its front and the engine spent meanwhile (the
    gateway and relay scenarios' unit of measure)."""
    proxy0, engine0 = cpu_seconds(t.proxy_pids), cpu_seconds(engine_pids)
    res = run_wrk(url.format(port=t.port), script, clients, seconds, loadgen)
    proxy1, engine1 = cpu_seconds(t.proxy_pids), cpu_seconds(engine_pids)
    n = max(res.requests, 1)
    return {
        "round": rnd,
        "target": t.name,
        "clients": clients,
        "requests": res.requests,
        "seconds": res.seconds,
        "rps": res.rps,
        "p50_ms": res.p50_ms,
        "p75_ms": res.p75_ms,
        "p90_ms": res.p90_ms,
        "p99_ms": res.p99_ms,
        "max_ms": res.max_ms,
        "mean_ms": res.mean_ms,
        "errors": res.errors,
        "proxy_cpu_s": proxy1 - proxy0,
        "engine_cpu_s": engine1 - engine0,
        "proxy_cpu_us": (proxy1 - proxy0) / n * 1e6,
        "engine_cpu_us": (engine1 - engine0) / n * 1e6,
        "loadgen_cpu_s": res.loadgen_cpu_s,
        "loadgen_busy": res.loadgen_cpu_s / res.seconds if res.seconds else math.nan,
        "server_busy": ((proxy1 - proxy0) + (engine1 - engine0)) / res.seconds if res.seconds else math.nan,
    }


def summarize(raw: list[dict[str, Any]], names: list[str], clients: tuple[int, ...]) -> list[dict[str, Any]]:
    """Per target and client count: medians over rounds, and deltas/ratios to direct paired per round."""
    rows = []
    for c in clients:
        direct = {r["round"]: r for r in raw if r["target"] == "direct" and r["clients"] == c}
        for name in names:
            runs = [r for r in raw if r["target"] == name and r["clients"] == c]
            row: dict[str, Any] = {"target": name, "clients": c, "rounds": len(runs)}
            for m in METRICS:
                vals = [r[m] for r in runs]
                row[m] = median(vals)
                row[f"{m}_min"], row[f"{m}_max"] = min(vals), max(vals)
            row["cpu_us"] = row["proxy_cpu_us"] + row["engine_cpu_us"]
            row["errors"] = sum(sum(r["errors"].values()) for r in runs)
            row["loadgen_busy"] = median([r["loadgen_busy"] for r in runs])
            row["server_busy"] = median([r["server_busy"] for r in runs])
            paired = [(r, direct[r["round"]]) for r in runs if r["round"] in direct]
            for m in ("p50_ms", "p90_ms", "p99_ms"):
                deltas = [r[m] - d[m] for r, d in paired]
                row[f"added_{m}"] = median(deltas)
                row[f"added_{m}_min"], row[f"added_{m}_max"] = min(deltas), max(deltas)
            ratios = [r["rps"] / d["rps"] for r, d in paired if d["rps"]]
            row["rps_ratio"] = median(ratios)
            row["rps_ratio_min"], row["rps_ratio_max"] = min(ratios), max(ratios)
            added_cpu = [r["proxy_cpu_us"] + r["engine_cpu_us"] - d["engine_cpu_us"] for r, d in paired]
            row["added_cpu_us"] = median(added_cpu)
            rows.append(row)
    return rows
