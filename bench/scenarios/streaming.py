"""Streaming: time to first chunk, aggregate chunks/s and CPU per stream at each concurrency,
every target in every round, rounds interleaved. Each stream is `stream_tokens` content chunks
(plus vLLM's role chunk, the final chunk and `[DONE]`) written back to back by the engine."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from ..loadgen import http_request, stream_level, summarize_stream_level
from ..procs import cpu_seconds
from ..stats import median, percentile, rotate
from . import FAST, MESSAGES, Context, targets

STREAM_TIMEOUT = 60.0


def run(ctx: Context) -> dict[str, Any]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    engine_pids = stack.pin_engine(FAST)
    tgts = targets(ctx, stack.engine_port(FAST))
    body = json.dumps(
        {
            "model": FAST,
            "messages": MESSAGES,
            "max_tokens": prof.stream_tokens,
            "stream": True,
            "ignore_eos": True,
        },
        separators=(",", ":"),
    ).encode()
    requests = {t.name: http_request(t.port, "/v1/chat/completions", body, stack.auth) for t in tgts}
    for t in tgts:  # warm-up: fill the fronts' upstream pools
        await stream_level(t.port, requests[t.name], 16, 64, STREAM_TIMEOUT)
    names = [t.name for t in tgts]
    by_name = {t.name: t for t in tgts}
    raw: list[dict[str, Any]] = []
    for rnd in range(prof.stream_rounds):
        for level in prof.stream_levels:
            total = max(level, prof.streams_per_level[level])
            for name in rotate(names, rnd):
                t = by_name[name]
                proxy0, engine0 = cpu_seconds(t.proxy_pids), cpu_seconds(engine_pids)
                res = await stream_level(t.port, requests[name], level, total, STREAM_TIMEOUT)
                proxy1, engine1 = cpu_seconds(t.proxy_pids), cpu_seconds(engine_pids)
                s = summarize_stream_level(res)
                n = max(s["streams"], 1)
                raw.append(
                    {
                        "round": rnd,
                        "target": name,
                        "streams_concurrent": level,
                        **s,
                        "ttfc_p50_ms": percentile(s["ttfc_ms"], 50),
                        "ttfc_p99_ms": percentile(s["ttfc_ms"], 99),
                        "stream_p50_ms": percentile(s["stream_ms"], 50),
                        "proxy_cpu_s": proxy1 - proxy0,
                        "engine_cpu_s": engine1 - engine0,
                        "proxy_cpu_us_per_stream": (proxy1 - proxy0) / n * 1e6,
                        "engine_cpu_us_per_stream": (engine1 - engine0) / n * 1e6,
                        "server_busy": ((proxy1 - proxy0) + (engine1 - engine0)) / s["wall_s"]
                        if s["wall_s"]
                        else math.nan,
                    }
                )
    return {
        "leases_left": await asyncio.to_thread(stack.leases_left, FAST),
        "load_generator": "raw asyncio Protocol client in the benchmark process (counts `data: ` events)",
        "tokens_per_stream": prof.stream_tokens,
        "rounds": prof.stream_rounds,
        "targets": names,
        "raw": raw,
        "summary": summarize(raw, names, prof.stream_levels),
    }


METRICS = (
    "ttfc_p50_ms",
    "ttfc_p99_ms",
    "stream_p50_ms",
    "chunks_per_s",
    "proxy_cpu_us_per_stream",
    "engine_cpu_us_per_stream",
    "chunks_per_stream",
)


def summarize(raw: list[dict[str, Any]], names: list[str], levels: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for level in levels:
        direct = {r["round"]: r for r in raw if r["target"] == "direct" and r["streams_concurrent"] == level}
        for name in names:
            runs = [r for r in raw if r["target"] == name and r["streams_concurrent"] == level]
            row: dict[str, Any] = {"target": name, "streams_concurrent": level, "rounds": len(runs)}
            for m in METRICS:
                vals = [r[m] for r in runs]
                row[m] = median(vals)
                row[f"{m}_min"], row[f"{m}_max"] = min(vals), max(vals)
            row["cpu_us_per_stream"] = row["proxy_cpu_us_per_stream"] + row["engine_cpu_us_per_stream"]
            row["errors"] = sum(r["errors"] for r in runs)
            row["server_busy"] = median([r["server_busy"] for r in runs])
            paired = [(r, direct[r["round"]]) for r in runs if r["round"] in direct]
            ratios = [r["chunks_per_s"] / d["chunks_per_s"] for r, d in paired if d["chunks_per_s"]]
            row["chunks_ratio"] = median(ratios)
            row["chunks_ratio_min"], row["chunks_ratio_max"] = min(ratios), max(ratios)
            deltas = [r["ttfc_p50_ms"] - d["ttfc_p50_ms"] for r, d in paired]
            row["added_ttfc_p50_ms"] = median(deltas)
            rows.append(row)
    return rows
