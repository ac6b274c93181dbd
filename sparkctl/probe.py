"""`sparkctl probe URL`: the readiness wait rendered into every model unit as `ExecStartPost=`.

It polls the engine's health URL every few tens of milliseconds and exits 0 at the first 200, so
systemd's start job finishes the moment the engine is ready (Podman's own health timer ticks at
about a second, and a client waiting for a cold start would pay for that granularity). systemd's
TimeoutStartSec= bounds the wait. If the unit's main process ($MAINPID, which systemd gives to
ExecStartPost=) exits first, the probe fails at once: systemd would otherwise leave a Type=notify
unit "activating" until the timeout, with the engine long dead.

It starts with every model, so it is its own small entry point: `sparkctl probe` reaches `main`
here without loading the command line's click group (sparkctl/__main__.py).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import time
import urllib.parse
from typing import NoReturn, TextIO

# Every line the probe writes starts so: the journal tells its lines from the engine's by it.
PREFIX = "sparkctl-probe:"


def probe_once(host: str, port: int, path: str, timeout: float) -> int | None:
    """The health status code, or None when nothing answers yet (vLLM refuses while loading)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "sparkctl-probe"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class EngineExitedError(Exception):
    """The unit's main process ended before the engine answered."""


def wait_ready(
    url: str, *, interval: float, timeout: float | None, main_pid: int | None = None, out: TextIO = sys.stderr
) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"need an http://HOST:PORT/PATH URL, got {url!r}")
    path = parts.path or "/"
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    last: int | None = None
    while deadline is None or time.monotonic() < deadline:
        if main_pid is not None and not alive(main_pid):
            raise EngineExitedError(f"the engine (pid {main_pid}) exited before {url} answered")
        status = probe_once(parts.hostname, parts.port, path, timeout=max(1.0, 5 * interval))
        if status == 200:
            print(f"{PREFIX} {url} ready after {time.monotonic() - started:.3f}s", file=out)
            return True
        if status != last and status is not None:
            print(f"{PREFIX} {url} answers {status}, waiting", file=out)
        last = status
        time.sleep(interval)
    return False


def main(argv: list[str]) -> int:
    """`sparkctl probe [--interval D] [--timeout D] URL`; exits 0 once ready, 1 if the engine died
    or the timeout passed, 2 on a usage error."""
    from sparkctl.quantities import parse_duration

    parser = argparse.ArgumentParser(prog="sparkctl probe", description="Wait until URL answers 200.")
    parser.add_argument("url")
    parser.add_argument("--interval", default="10ms", help="time between probes (default: 10ms)")
    parser.add_argument("--timeout", default=None, help="give up after this long (default: never)")
    args = parser.parse_args(argv)
    # systemd tells ExecStartPost= the unit's main process; without it (by hand) nothing is watched.
    main_pid = os.environ.get("MAINPID")
    try:
        ok = wait_ready(
            args.url,
            interval=parse_duration(args.interval),
            timeout=parse_duration(args.timeout) if args.timeout else None,
            main_pid=int(main_pid) if main_pid and main_pid.isdigit() else None,
        )
    except ValueError as e:
        print(f"{PREFIX} error: {e}", file=sys.stderr)
        return 2
    except EngineExitedError as e:
        print(f"{PREFIX} error: {e}", file=sys.stderr)
        return 1
    if not ok:
        print(f"{PREFIX} error: {args.url} was not ready within {args.timeout}", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str]) -> NoReturn:
    """`main`, then out. Once ready, at once: every millisecond until systemd's "active" is a
    client waiting on a cold start, and an orderly interpreter shutdown costs ~20 of them."""
    code = main(argv)
    sys.stderr.flush()
    sys.stdout.flush()
    if code == 0:
        os._exit(0)
    sys.exit(code)
