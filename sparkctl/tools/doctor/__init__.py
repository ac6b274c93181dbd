"""`sparkctl doctor`: is this host ready to run sparkctl, and if not, what to do about it.

Every check is a function of a `Host` (where files are, how commands run, disk space, whether a
port is free) and the settings, returning one pass/warn/fail `Check` with the fix. The real host
is `Host()`; tests build hosts in states that are hard to reach for real (no CDI spec, Podman 4.3,
a full disk, cgroup v1). A failure means sparkctl cannot work as configured; a warning means it
works, with a limit worth knowing.

The checks live by subject (runtime: systemd, cgroups, Podman, Quadlet; hardware: GPU, memory,
swap, disk; service: port, API key, polkit, socket unit, models; learned: what the
daemon learned of the models' footprints; cluster: the Sparks' direct link and the peers;
spanning: what the models that span Sparks need on every node);
`CHECKS` is their order in the report, and `run_checks` reads it from this module at call time,
so a test may replace it.

Inside a demo's sandbox (`sparkctl doctor` next to a running demo runs there: tools/demo_locator.py)
the checks that are a Spark's alone — the NVIDIA driver, memory sized for real models, swap, the
disk for real weights — are left out, and a first line says that this is the demo.
"""

from __future__ import annotations

from sparkctl.settings import Settings
from sparkctl.tools.doctor.check import Check, CheckFn, Status
from sparkctl.tools.doctor.cluster import check_link
from sparkctl.tools.doctor.hardware import (
    CDI_FIX,
    GIB,
    check_cdi,
    check_disk,
    check_driver,
    check_memory,
    check_swap,
)
from sparkctl.tools.doctor.host import Disk, Host, Result, disk_of, port_is_free, run_command
from sparkctl.tools.doctor.learned import check_footprints
from sparkctl.tools.doctor.peers import check_cluster_pulls, check_peers
from sparkctl.tools.doctor.runtime import (
    check_cgroup2,
    check_notify_healthy,
    check_podman,
    check_podman_api,
    check_quadlet,
    check_systemd,
)
from sparkctl.tools.doctor.service import (
    check_api_key,
    check_models,
    check_polkit,
    check_port,
    check_socket_unit,
)
from sparkctl.tools.doctor.spanning import check_spanning

__all__ = [
    "CDI_FIX",
    "CHECKS",
    "GIB",
    "SPARK_ONLY",
    "Check",
    "CheckFn",
    "Disk",
    "Host",
    "Result",
    "Status",
    "check_api_key",
    "check_cdi",
    "check_cgroup2",
    "check_cluster_pulls",
    "check_disk",
    "check_driver",
    "check_footprints",
    "check_link",
    "check_memory",
    "check_models",
    "check_notify_healthy",
    "check_peers",
    "check_podman",
    "check_podman_api",
    "check_polkit",
    "check_port",
    "check_quadlet",
    "check_socket_unit",
    "check_spanning",
    "check_swap",
    "check_systemd",
    "disk_of",
    "port_is_free",
    "run_checks",
    "run_command",
]

CHECKS: tuple[CheckFn, ...] = (
    check_systemd,
    check_cgroup2,
    check_podman,
    check_quadlet,
    check_notify_healthy,
    check_podman_api,
    check_cdi,
    check_driver,
    check_memory,
    check_swap,
    check_disk,
    check_port,
    check_api_key,
    check_polkit,
    check_socket_unit,
    check_models,
    check_footprints,
    check_link,
    check_peers,
    check_cluster_pulls,
    check_spanning,
)


# What only a Spark needs: the demo's engines are emulated (no GPU, no real memory footprint,
# placeholder weights).
SPARK_ONLY: tuple[CheckFn, ...] = (check_driver, check_memory, check_swap, check_disk)


def run_checks(settings: Settings, host: Host | None = None, *, demo: str | None = None) -> list[Check]:
    """Every check, in report order. `demo`: the URL of the demo whose sandbox this runs in."""
    host = host or Host()
    results = []
    checks = CHECKS
    if demo:
        checks = tuple(c for c in CHECKS if c not in SPARK_ONLY)
        results.append(
            Check(
                "demo",
                "pass",
                f"the running sparkctl demo at {demo}: its sandbox (systemd, Podman, Quadlet) and "
                "service are checked; the GPU driver, memory, swap and weights disk are a Spark's "
                "(stop the demo to check this host itself)",
            )
        )
    for check in checks:
        try:
            results.append(check(host, settings))
        except Exception as e:  # one broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}", None))
    return results
