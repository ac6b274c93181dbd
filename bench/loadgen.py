"""Load generators, chosen to measure the servers rather than themselves.

- Non-streaming: `wrk` (C, one thread, keep-alive connections, POST body from a Lua script). Its
  `done()` hook prints the exact percentiles from wrk's own latency histogram as JSON.
- Streaming and held connections: a raw asyncio `Protocol` client that writes a prepared request
  and counts `data: ` events in the bytes as they arrive (no HTTP library, no JSON parsing), so a
  chunk costs it a `bytes.count` and little else.
- Cold start and swap: a blocking socket, connected before the clock starts; the time is from
  the last byte of the request handed to the kernel to the first byte of the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import _preexec

CHUNKED_END = b"\r\n0\r\n\r\n"


def http_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------- wrk

_LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"min_us":%d,"mean_us":%.3f,"max_us":%d,"p50_us":%d,"p75_us":%d,'
    .. '"p90_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99)))
end
"""


def wrk_script(directory: Path, body: bytes, headers: dict[str, str]) -> Path:
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = directory / "post.lua"
    path.write_text(_LUA.format(body=body.decode(), headers=lines))
    return path


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    loadgen_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def run_wrk(url: str, script: Path, connections: int, seconds: int, cpus: frozenset[int] | None) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        preexec_fn=lambda: _preexec(cpus),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stdout[-800:]}{proc.stderr[-800:]}")
    d = json.loads(line.split(" ", 1)[1])
    return WrkRun(
        requests=d["requests"],
        seconds=d["duration_us"] / 1e6,
        p50_ms=d["p50_us"] / 1000,
        p75_ms=d["p75_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000,
        mean_ms=d["mean_us"] / 1000,
        errors={k: d[k] for k in ("connect", "read", "write", "status", "timeout")},
        loadgen_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


# ---------------------------------------------------------------------------------- streams


class StreamError(Exception):
    pass


@dataclass
class StreamResult:
    status: int
    ttfc: float  # seconds from the request's write to the first `data: ` event
    total: float  # seconds to the end of the response
    chunks: int  # `data: ` events, [DONE] included


class StreamConn(asyncio.Protocol):
    """One keep-alive connection that runs one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[StreamResult] | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.chunks = 0
        self.first: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: bytes) -> asyncio.Future[StreamResult]:
        assert self.transport is not None
        self.future = asyncio.get_running_loop().create_future()
        self.head = b""
        self.status = 0
        self.length: int | None = None
        self.in_body = False
        self.tail = b""
        self.chunks = 0
        self.first = None
        self.t0 = time.perf_counter()
        self.transport.write(request)
        return self.future

    def data_received(self, data: bytes) -> None:
        if self.future is None or self.future.done():
            return
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            self.status = int(head.split(" ", 2)[1])
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    self.length = int(value)
            self.in_body = True
        joined = self.tail + data
        found = joined.count(b"data: ")
        if found:
            if self.first is None:
                self.first = time.perf_counter()
            self.chunks += found
        self.tail = joined[-7:]
        if self.length is not None:
            self.length -= len(data)
            done = self.length <= 0
        else:
            done = self.tail == CHUNKED_END
        if done:
            now = time.perf_counter()
            first = self.first if self.first is not None else now
            self.future.set_result(StreamResult(self.status, first - self.t0, now - self.t0, self.chunks))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(StreamError(f"connection lost: {exc or 'closed by the server'}"))
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_conns(port: int, count: int, batch: int = 64) -> list[StreamConn]:
    loop = asyncio.get_running_loop()
    conns: list[StreamConn] = []
    for start in range(0, count, batch):
        made = await asyncio.gather(
            *(loop.create_connection(StreamConn, "127.0.0.1", port) for _ in range(min(batch, count - start)))
        )
        conns += [proto for _, proto in made]
    return conns


@dataclass
class LevelResult:
    results: list[StreamResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0


async def stream_level(
    port: int, request: bytes, concurrency: int, total: int, stream_timeout: float
) -> LevelResult:
    """`total` streams over `concurrency` keep-alive connections, each running one at a time."""
    out = LevelResult()
    conns = await open_conns(port, concurrency)
    remaining = total

    async def worker(conn: StreamConn) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                res = await asyncio.wait_for(conn.send(request), stream_timeout)
            except (StreamError, TimeoutError) as e:
                out.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(StreamConn, "127.0.0.1", port)
                continue
            if res.status != 200:
                out.errors.append(f"HTTP {res.status}")
            out.results.append(res)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        out.wall = time.perf_counter() - t0
        for c in conns:
            c.close()
    return out


def summarize_stream_level(level: LevelResult) -> dict[str, Any]:
    ok = [r for r in level.results if r.status == 200]
    chunks = sum(r.chunks for r in ok)
    return {
        "streams": len(ok),
        "errors": len(level.errors),
        "error_samples": level.errors[:5],
        "wall_s": level.wall,
        "chunks": chunks,
        "chunks_per_stream": chunks / len(ok) if ok else 0,
        "chunks_per_s": chunks / level.wall if level.wall else 0.0,
        "ttfc_ms": [r.ttfc * 1000 for r in ok],
        "stream_ms": [r.total * 1000 for r in ok],
    }


# ---------------------------------------------------------------------------------- one request


@dataclass
class Timed:
    sent_wall: float  # time.time() just before the request was written
    sent: float  # time.monotonic() at the same instant (systemd's monotonic clock)
    first_byte: float  # time.monotonic() when the first byte of the answer arrived
    status: int
    body: bytes

    @property
    def ttfb(self) -> float:
        return self.first_byte - self.sent


def timed_request(port: int, request: bytes, timeout: float = 120) -> Timed:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent_wall, sent = time.time(), time.monotonic()
        s.sendall(request)
        data = s.recv(65536)
        first = time.monotonic()
        if not data:
            raise StreamError("the server closed the connection without answering")
        while b"\r\n\r\n" not in data:
            more = s.recv(65536)
            if not more:
                break
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            (int(v) for n, _, v in (ln.partition(":") for ln in lines[1:]) if n.lower() == "content-length"),
            0,
        )
        while len(body) < length:
            more = s.recv(65536)
            if not more:
                break
            body += more
        return Timed(sent_wall, sent, first, status, body)


def pin_self(cpus: frozenset[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
