"""Host processes and cgroups, read from /proc and cgroupfs: a process's start time (which tells a
pid from its reuse), whether it still runs, killing every process of a cgroup tree before
removing the tree, and stopping a box's launcher.

These work on what a box leaves on the host, so they hold whether or not the box still runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def proc_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def running(pid: int) -> bool:
    """Alive and not a zombie; reaps it when it is our own exited child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cgroup_procs(cg: Path) -> list[str]:
    """Pids of every process in a cgroup and its descendants."""
    procs = []
    for f in cg.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            procs += f.read_text().split()
    return procs


def kill_cgroup(cg: Path) -> None:
    """Kill everything in a cgroup tree (waiting up to 5 s for it to go), then remove the tree."""
    if not cg.exists():
        return
    if cgroup_procs(cg):
        with contextlib.suppress(OSError):
            (cg / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + 5
        while cgroup_procs(cg) and time.monotonic() < deadline:
            time.sleep(0.02)
    # Deepest first: a cgroup can only be removed once it has no children.
    for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        cg.rmdir()


def stop_launcher(box_dir: Path) -> None:
    """Wait up to 5 s for the launcher of the box at `box_dir` to end (it does once the box's PID 1
    is gone), then kill it; a pid in DIR/launcher.pid that is not that launcher is left alone."""
    try:
        pid = int((box_dir / "launcher.pid").read_text())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"launcher.py" not in cmdline or str(box_dir).encode() not in cmdline:
        return
    deadline = time.monotonic() + 5
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # it is our child when this process booted the box
