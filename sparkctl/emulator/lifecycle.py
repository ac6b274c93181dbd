"""The emulator as a process: parse the command line, stand for model loading (holding the memory
asked for), bind, announce readiness, serve until SIGTERM/SIGINT, and turn unhealthy or crash on
cue. With `--nnodes N` it is one part of a multi-node model (multinode.py): the head binds only
once its workers joined, a worker never binds.

Like vLLM, nothing listens while the model loads. The `ready` line reports exec_to_ready_ms, the
process's age when it starts listening, counted from the exec (not from this module's import), so
that cold-start benchmarks include the interpreter's own start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import resource
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from sparkctl.emulator import LOADED_AT, multinode
from sparkctl.emulator.config import Config, parse_args
from sparkctl.emulator.log import say
from sparkctl.emulator.server import Server

_PAGE = 4096
_SHUTDOWN_GRACE_S = 0.1  # per connection, twice over: wait for the handler, then for its cancel


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else list(argv))
    _raise_fd_limit()
    return asyncio.run(serve(cfg))


def _raise_fd_limit() -> None:
    """Open files up to the hard limit, as vLLM does at start: a unit's default soft limit of
    1024 makes accept() fail past about a thousand connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _seconds_since_exec() -> float:
    """Age of this process from /proc (field 22 of stat is its start, in clock ticks since boot)."""
    try:
        stat = Path("/proc/self/stat").read_bytes()
        # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
        start_ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - LOADED_AT  # no procfs: the best lower bound there is


def _allocate(megabytes: int) -> mmap.mmap | None:
    """N MiB that are really resident: every page is written, so the kernel must back it."""
    if megabytes <= 0:
        return None
    size = megabytes << 20
    ballast = mmap.mmap(-1, size)
    ballast[::_PAGE] = b"\x01" * (size // _PAGE)
    return ballast


def _crash(code: int) -> None:
    say(f"crashing exit_code={code}")
    os._exit(code)  # abrupt on purpose: no cleanup, in-flight streams are cut


async def _load(cfg: Config, stop: asyncio.Event) -> mmap.mmap | None:
    """Stand for model loading (cut short by `stop`); returns the ballast."""
    say(f"loading model={cfg.model} load_time={cfg.load_time:g}s memory_mb={cfg.memory_mb}")
    began = time.monotonic()
    ballast = _allocate(cfg.memory_mb)
    remaining = cfg.load_time - (time.monotonic() - began)
    if remaining > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await stop.wait()
    return ballast


def _arm_timers(cfg: Config, server: Server) -> None:
    loop = asyncio.get_running_loop()
    if cfg.unhealthy_after is not None:
        loop.call_later(max(0.0, cfg.unhealthy_after), setattr, server, "healthy", False)
    if cfg.crash_after is not None:
        loop.call_later(max(0.0, cfg.crash_after), _crash, cfg.exit_code)


async def serve(cfg: Config) -> int:
    """Load, bind, announce readiness, serve until SIGTERM/SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # set by a signal, or by a multi-node head that lost a worker
    asked = asyncio.Event()

    def term() -> None:
        asked.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, term)
    code = await _run(cfg, stop)
    if asked.is_set() and cfg.stop_time > 0:
        # no longer listening, but not gone: what the unit's stop timeout is for
        say(f"tearing down for {cfg.stop_time:g}s")
        await asyncio.sleep(cfg.stop_time)
    return code


async def _run(cfg: Config, stop: asyncio.Event) -> int:
    server = Server(cfg)
    # Like vLLM, nothing listens while the model loads: clients see connection refused.
    server.ballast = await _load(cfg, stop)
    if stop.is_set():
        say("stopped while loading")
        return 0
    if cfg.node_rank > 0:  # a headless worker of a multi-node model: it never listens
        return await multinode.work(cfg, stop)
    gathered = await multinode.gather_workers(cfg, stop) if cfg.nnodes > 1 else None
    if cfg.nnodes > 1 and gathered is None:
        say("stopped while waiting for workers")
        return 0
    runner = await _listen(cfg, server)
    if runner is None:
        return 1
    lost: list[str] = []
    if gathered is not None:

        def lose(why: str) -> None:
            if not lost:
                lost.append(why)
                stop.set()

        multinode.watch(gathered[0], lose)
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    exec_to_ready_ms = _seconds_since_exec() * 1000
    _arm_timers(cfg, server)
    say(
        f"ready exec_to_ready_ms={exec_to_ready_ms:.1f} ready_unix={time.time():.6f} port={port} "
        f"model={cfg.served_names[0]}"
    )
    await stop.wait()
    say("stopping")
    # Bounded: open streams are cut regardless, and exiting promptly is what matters.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner.cleanup(), timeout=0.5)
    if gathered is not None:
        group, rendezvous = gathered
        rendezvous.close()
        await group.close()
    if lost:
        say(f"multinode: lost {lost[0]}: exiting exit_code={cfg.exit_code}")
        return cfg.exit_code
    return 0


async def _listen(cfg: Config, server: Server) -> web.AppRunner | None:
    """The server, listening on cfg's address; None (reported on stderr) if it cannot bind."""
    # handler_cancellation: a client that hangs up cancels its generation at once.
    runner = web.AppRunner(
        server.app(), access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE_S
    )
    await runner.setup()
    # A deep backlog: benchmarks open hundreds of connections at once.
    site = web.TCPSite(runner, cfg.host or None, cfg.port, reuse_address=True, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        print(f"sparkctl-emulate: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return None
    return runner
