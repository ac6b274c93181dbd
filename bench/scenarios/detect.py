"""Detection: how long sparkctl takes to notice an engine that died, and a client that hung up,
in the middle of a stream (BRIEF: within 1 s; #18).

- **Engine death.** A stream through sparkctl to an engine generating 20 tokens/s; once its first
  chunk is in, the engine's process gets SIGKILL. Measured: from the kill to the client reading
  the stream's error event (or, failing that, the end of the stream). The model is stopped through
  the admin API afterwards, which clears its failure, and the next run starts it afresh.
- **Client disconnect.** The same stream; once its first chunk is in, the client closes its
  socket. Measured: from the close to the engine's end of the relay's connection going from the
  kernel's table (/proc/net/tcp: the relay closed its connection, which is what stops the
  engine's generation), and to the daemon counting no lease on the model (admin API), both polled
  every ~2 ms.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from sparkctl.units.names import service_name

from ..loadgen import http_request
from ..procs import wait_for
from ..stats import spread
from . import Context

MODEL = "bench-detect"
TOKENS_PER_SECOND = 20.0
POLL = 0.002
GIVE_UP = 10.0  # seconds: a run slower than this is recorded as that, and the scenario goes on


def _stream(ctx: Context) -> socket.socket:
    """A stream through sparkctl, once its first content chunk has arrived."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "go on"}],
            "max_tokens": 2000,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    s = socket.create_connection(("127.0.0.1", ctx.stack.port), timeout=GIVE_UP)
    s.sendall(http_request(ctx.stack.port, "/v1/chat/completions", body, ctx.stack.auth))
    seen = b""
    while seen.count(b"data: ") < 2:
        more = s.recv(65536)
        if not more:
            raise RuntimeError(f"the stream ended before its first chunk: {seen[:300]!r}")
        seen += more
    return s


def _established(port: int) -> int:
    """TCP connections in ESTABLISHED state whose local port is `port` (the engine's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _engine_death(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    stack.complete(MODEL)
    s = _stream(ctx)
    pids = stack.engine_pids(MODEL)
    t0 = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    s.settimeout(GIVE_UP)
    seen, error_event = b"", False
    try:
        while True:
            more = s.recv(65536)
            if not more:
                break
            seen += more
            if b'"error"' in seen:
                error_event = True
                break
    except TimeoutError:
        pass
    seconds = time.monotonic() - t0
    s.close()
    # Told to stop, sparkctl clears the failure (systemd keeps the unit "failed", which a start
    # clears): the next run starts the model afresh.
    status, data = stack.post(f"/api/v1/models/{MODEL}/stop")
    if status not in (200, 202):
        raise RuntimeError(f"stopping {MODEL} failed: HTTP {status} {data[:300]!r}")
    wait_for(lambda: stack.state(MODEL) == "stopped", 30, f"{MODEL} to be stopped")
    # Ten kills in a few seconds would hit systemd's start rate limit (StartLimitBurst): the
    # next start would be refused. Forgetting the failures is what an operator would do.
    assert stack.box is not None
    stack.box.systemctl("reset-failed", service_name(MODEL), check=False)
    return {"seconds": seconds, "error_event": error_event}


def _client_gone(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    stack.complete(MODEL)
    port = stack.engine_port(MODEL)
    s = _stream(ctx)
    during = _established(port)
    t0 = time.monotonic()
    s.close()
    upstream: float | None = None
    lease: float | None = None
    while (upstream is None or lease is None) and time.monotonic() - t0 < GIVE_UP:
        now = time.monotonic()
        if upstream is None and _established(port) < during:
            upstream = now - t0
        if lease is None and stack.in_flight(MODEL) == 0:
            lease = time.monotonic() - t0
        time.sleep(POLL)
    return {
        "upstream_closed_s": upstream if upstream is not None else GIVE_UP,
        "lease_released_s": lease if lease is not None else GIVE_UP,
        "engine_connections_during": during,
    }


def run(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    deaths = [_engine_death(ctx) for _ in range(ctx.profile.detect_runs)]
    gone = [_client_gone(ctx) for _ in range(ctx.profile.detect_runs)]
    return {
        "model_tokens_per_second": TOKENS_PER_SECOND,
        "engine_death": deaths,
        "client_gone": gone,
        "summary": {
            "engine_death_ms": spread([d["seconds"] * 1000 for d in deaths]),
            "engine_death_error_events": sum(d["error_event"] for d in deaths),
            "upstream_closed_ms": spread([g["upstream_closed_s"] * 1000 for g in gone]),
            "lease_released_ms": spread([g["lease_released_s"] * 1000 for g in gone]),
            "runs": len(deaths),
        },
        "leases_left": stack.leases_left(MODEL),
    }
