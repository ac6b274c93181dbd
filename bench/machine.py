"""The machine a run happened on, and which cores the load generator and the servers get."""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .procs import CLK_TCK

PACKAGES = (
    "sparkctl",
    "aiohttp",
    "multidict",
    "yarl",
    "dbus-fast",
    "prometheus-client",
    "pydantic",
    "matplotlib",
)
SYSCTLS = ("net.core.somaxconn", "net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", "fs.nr_open")


@dataclass(frozen=True)
class CpuPlan:
    """Load generator and servers on separate cores where there are two: the servers share one
    core (a proxy competes with its engine for CPU, as a gateway would with vLLM's API server),
    exactly as the anchor figures were measured."""

    loadgen: frozenset[int] | None
    servers: frozenset[int] | None

    @classmethod
    def for_this_machine(cls) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)
        return cls(frozenset({cpus[0]}), frozenset({cpus[1]}))

    def describe(self) -> str:
        if self.loadgen is None or self.servers is None:
            return "one core only: load generator and servers share it (no pinning)"
        return (
            f"load generator on CPU {','.join(map(str, sorted(self.loadgen)))}; every server process "
            "(engines, sparkctl, nginx, naive proxy, vllm-router) on CPU "
            f"{','.join(map(str, sorted(self.servers)))}"
        )

    def to_json(self) -> dict[str, list[int] | None]:
        return {k: sorted(v) if v else None for k, v in asdict(self).items()}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(argv: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else None


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().split("\n")[0].replace("\t", " ")
    except OSError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    head = _version(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], r"([0-9a-f]{12})")
    if head is None:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def facts(plan: CpuPlan) -> dict[str, object]:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["nginx"] = _version(["nginx", "-v"], r"nginx/(\S+)")
    versions["wrk"] = _version(["wrk", "-v"], r"wrk (\S+)")
    virt = _version(["systemd-detect-virt"], r"(\S+)")
    return {
        "cpu_model": _cpu_model(),
        "architecture": platform.machine(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "kernel": platform.release(),
        "os": _os_release(),
        "virtualization": virt,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "clock_ticks_per_s": CLK_TCK,
        "packages": versions,
        "sysctl": {name: _sysctl(name) for name in SYSCTLS},
        "sparkctl_commit": _git_commit(),
        "pinning": plan.to_json(),
        "pinning_description": plan.describe(),
    }


def _os_release() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return None
