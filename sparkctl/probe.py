"""`sparkctl probe URL`: the readiness wait rendered into every model unit as `ExecStartPost=`.

It polls the engine's health URL every few tens of milliseconds and exits 0 at the first 200, so
systemd's start job finishes the moment the engine is ready (Podman's own health timer ticks at
about a second, and a client waiting for a cold start would pay for that granularity). systemd's
TimeoutStartSec= bounds the wait. If the unit's main process ($MAINPID, which systemd gives to
ExecStartPost=) exits first, the probe fails at once: systemd would otherwise leave a Type=notify
unit "activating" until the timeout, with the engine long dead. Standard library only: it starts
with every model.
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.parse
from typing import TextIO


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
            print(f"sparkctl-probe: {url} ready after {time.monotonic() - started:.3f}s", file=out)
            return True
        if status != last and status is not None:
            print(f"sparkctl-probe: {url} answers {status}, waiting", file=out)
        last = status
        time.sleep(interval)
    return False
