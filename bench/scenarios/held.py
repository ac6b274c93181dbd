"""Streams held open through sparkctl: the daemon's resident memory before, while N slow streams
(one token per second) are open, and after they are gone; per connection."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

from ..loadgen import StreamConn, http_request, open_conns
from ..procs import cpu_seconds, rss_kib
from . import MESSAGES, SLOW, Context

SAMPLE_EVERY = 100  # connections between RSS samples while opening them


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Our soft RLIMIT_NOFILE up to `wanted` (within the hard limit: no CAP_SYS_RESOURCE here); the
    daemon, started by us, inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run(ctx: Context) -> dict[str, Any]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    n = prof.held
    daemon = stack.daemon_pids()[0]
    await asyncio.to_thread(stack.complete, SLOW, 1)
    await asyncio.sleep(1.0)  # let the warm-up's garbage settle before the baseline
    before = rss_kib(daemon)
    body = json.dumps(
        {"model": SLOW, "messages": MESSAGES, "max_tokens": 3600, "stream": True, "ignore_eos": True},
        separators=(",", ":"),
    ).encode()
    request = http_request(stack.port, "/v1/chat/completions", body, stack.auth)
    samples: list[dict[str, float]] = [{"connections": 0, "rss_kib": before, "t": 0.0}]
    conns: list[StreamConn] = []
    futures = []
    t0 = time.monotonic()
    cpu0 = cpu_seconds([daemon])
    try:
        while len(conns) < n:
            batch = await open_conns(stack.port, min(SAMPLE_EVERY, n - len(conns)), batch=50)
            for c in batch:
                futures.append(c.send(request))
            conns += batch
            await _wait_first_chunk(batch, within=30)
            samples.append(
                {"connections": len(conns), "rss_kib": rss_kib(daemon), "t": time.monotonic() - t0}
            )
        opened = time.monotonic() - t0
        held_rss = []
        end = time.monotonic() + prof.held_seconds
        chunks0 = sum(c.chunks for c in conns)
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, prof.held_seconds))
            held_rss.append(rss_kib(daemon))
            samples.append({"connections": len(conns), "rss_kib": held_rss[-1], "t": time.monotonic() - t0})
        chunks = sum(c.chunks for c in conns) - chunks0
        alive = sum(1 for f in futures if not f.done())
        cpu_held = cpu_seconds([daemon]) - cpu0
    finally:
        for c in conns:
            c.close()
        await asyncio.gather(*(c.lost for c in conns), return_exceptions=True)
        for f in futures:
            if not f.done():
                f.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
    # The gateway notices the hang-ups at its next write (≤ 1 s with one token a second).
    leases_left = await asyncio.to_thread(stack.leases_left, SLOW, 5.0)
    await asyncio.sleep(1.0)
    after = rss_kib(daemon)
    during = max(held_rss)
    return {
        "connections": n,
        "tokens_per_second_per_stream": 1,
        "held_seconds": prof.held_seconds,
        "open_seconds": opened,
        "fd_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "streams_alive_at_end": alive,
        "chunks_while_held": chunks,
        "chunks_per_s_while_held": chunks / prof.held_seconds if prof.held_seconds else 0,
        "daemon_cpu_s_open_and_hold": cpu_held,
        "leases_left": leases_left,
        "rss_before_kib": before,
        "rss_during_kib": during,
        "rss_during_samples_kib": held_rss,
        "rss_after_kib": after,
        "rss_per_connection_kib": (during - before) / n,
        "samples": samples,
    }


async def _wait_first_chunk(conns: list[StreamConn], within: float) -> None:
    deadline = time.monotonic() + within
    while any(c.first is None for c in conns):
        if time.monotonic() > deadline:
            missing = sum(1 for c in conns if c.first is None)
            raise RuntimeError(f"{missing} held streams got no first chunk within {within:.0f}s")
        await asyncio.sleep(0.05)
