"""What the doctor's checks may look at: a `Host`, and the real machine's ways of answering.

A `Host` reads files under its `root`, runs commands through `run`, measures disks through `disk`,
asks whether a port is free through `port_free` and whether a `sparkctl demo` runs here through
`demo`. `Host()` is this machine; a test swaps any of them to lay out a host in a state that is
hard to reach for real. `run` answers None when the program is not installed, so a check can tell
"missing" from "failed".
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.settings import Settings
from sparkctl.tools import demo_locator
from sparkctl.tools.demo_locator import Demo


@dataclass(frozen=True, slots=True)
class Result:
    returncode: int
    stdout: str
    stderr: str = ""


@dataclass(frozen=True, slots=True)
class Disk:
    path: Path  # the directory measured (the nearest existing one)
    total: int
    free: int


Runner = Callable[[Sequence[str]], Result | None]


def run_command(argv: Sequence[str]) -> Result | None:
    """Run a program; None when it is not installed."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Result(127, "", str(e))
    return Result(proc.returncode, proc.stdout, proc.stderr)


Fetcher = Callable[[str, Mapping[str, str]], tuple[int, bytes] | None]


def http_get(url: str, headers: Mapping[str, str]) -> tuple[int, bytes] | None:
    """GET `url`: (status, body), or None when nothing answers within a few seconds."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 16)
    except (OSError, ValueError):
        return None


def disk_of(path: Path) -> Disk | None:
    """The disk `path` is (or will be) on: a directory not created yet is measured at its
    nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None
    return Disk(probe, usage.total, usage.free)


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Host:
    """What the checks may look at. Paths are read under `root`, so a test can lay out a host."""

    root: Path = Path("/")
    run: Runner = run_command
    disk: Callable[[Path], Disk | None] = disk_of
    port_free: Callable[[str, int], bool] = port_is_free
    euid: int = field(default_factory=os.geteuid)
    demo: Callable[[], Demo | None] = demo_locator.read
    fetch: Fetcher = http_get

    def path(self, p: str | Path) -> Path:
        return self.root / str(p).lstrip("/")

    def read(self, p: str | Path) -> str | None:
        try:
            return self.path(p).read_text(errors="replace")
        except OSError:
            return None

    def systemctl(self, settings: Settings, *args: str) -> Result | None:
        user = ["--user"] if settings.systemd.bus == "user" else []
        return self.run(["systemctl", *user, *args])


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first MAJOR.MINOR[.PATCH] in a program's version output."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
