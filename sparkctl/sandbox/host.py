"""This host as the sandbox sees it: where boxes and the substrate live, whether a box can boot
here at all, the cgroup2 hierarchy a box's own cgroup goes under, and which host paths every box
must see unchanged.

PREFIX (the substrate install.sh puts down) and ROOT (where boxes live) can be moved with
SPARKCTL_SANDBOX_PREFIX and SPARKCTL_SANDBOX_ROOT.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import sys
from collections.abc import Iterable
from pathlib import Path

from sparkctl.errors import SandboxError
from sparkctl.paths import SOURCE_ROOT

HERE = Path(__file__).resolve().parent
PREFIX = Path(os.environ.get("SPARKCTL_SANDBOX_PREFIX", "/opt/sparkctl-sandbox"))
ROOT = Path(os.environ.get("SPARKCTL_SANDBOX_ROOT", "/var/lib/sparkctl-sandbox"))
INSTALL_HINT = f"run `{HERE / 'install.sh'}` as root (or ./scripts/setup)"


def unavailable_reason() -> str | None:
    """Why a sandbox cannot boot on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "the sandbox needs root (namespaces, mounts, cgroups)"
    if not (PREFIX / ".installed").is_file() or not (PREFIX / "podman5/usr/bin/podman").is_file():
        return f"the sandbox substrate is not installed: {INSTALL_HINT}"
    for tool in ("unshare", "nsenter", "busctl", "findmnt"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: {INSTALL_HINT}"
    if not Path("/lib/systemd/systemd").exists():
        return f"systemd is not installed: {INSTALL_HINT}"
    try:
        cgroup2_root()
    except SandboxError as e:
        return e.message
    return None


def cgroup2_root() -> Path:
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        with contextlib.suppress(OSError):
            if os.statvfs(candidate) and _fstype(candidate) == "cgroup2":
                return candidate
    raise SandboxError("no cgroup2 hierarchy is mounted (needed for the box's own cgroup)")


def _fstype(path: Path) -> str:
    best, kind = "", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            target = parts[1]
            if (str(path) == target or str(path).startswith(target.rstrip("/") + "/")) and len(target) >= len(
                best
            ):
                best, kind = target, parts[2]
    return kind


def default_shares(extra: Iterable[Path]) -> list[Path]:
    """Host paths the box must see as they are: this interpreter, its base, the source tree."""
    wanted = [Path(sys.prefix), Path(sys.base_prefix), *(p for p in [SOURCE_ROOT] if p), *extra]
    out: list[Path] = []
    for p in sorted({w.resolve() for w in wanted}, key=lambda p: len(p.parts)):
        if p != Path("/") and not any(p.is_relative_to(o) for o in out):
            out.append(p)
    return out


# Below the kernel's ephemeral range (32768-60999 by default) and the test suites' fixed ranges
# (28000-29999): a port picked by binding to 0 is one an outgoing connection may take before a
# server listens on it, and CI saw exactly that race.
SPARE_PORTS = range(20000, 28000)


def spare_socket() -> socket.socket:
    """A socket bound (not yet listening) on a free loopback port in SPARE_PORTS: for the tests'
    and the benchmarks' servers and engines."""
    for _ in range(200):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", random.choice(SPARE_PORTS)))
        except OSError:
            s.close()
            continue
        return s
    raise SandboxError(f"no free port from {SPARE_PORTS.start} to {SPARE_PORTS.stop - 1}")


def spare_port() -> int:
    """A free loopback port in SPARE_PORTS, for a server another process will bind."""
    with spare_socket() as s:
        return int(s.getsockname()[1])
