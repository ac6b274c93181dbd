"""The doctor's checks of the stack the model units run on: systemd, cgroup v2, Podman, Quadlet,
Notify=healthy and Podman's API socket.

Each check is a `CheckFn` (see check.py): it reads the host only through its `Host`, so tests lay
out the versions and files; the version floors below say which unit feature needs them.
"""

from __future__ import annotations

import re

from sparkctl.settings import Settings
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.distro import distro, podman_fix
from sparkctl.tools.doctor.host import Host, parse_version, shown

QUADLET_PATHS = (
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/lib/systemd/system-generators/podman-system-generator",
)
# sparkctl.service uses PrivateIPC= (systemd 248); the sandbox runs 252, DGX OS 7 ships 255.
SYSTEMD_MIN = 248
SYSTEMD_TESTED = 252
QUADLET_MIN = (4, 4)  # Podman 4.4 introduced Quadlet
PODMAN_TESTED = (4, 9)  # Ubuntu 24.04 / DGX OS 7
NOTIFY_HEALTHY = (5, 0)
PODMAN_SOCKET = "/run/podman/podman.sock"


def check_systemd(host: Host, settings: Settings) -> Check:
    name = "systemd"
    out = host.run(["systemctl", "--version"])
    if out is None or out.returncode != 0:
        return Check(name, "fail", "systemctl is not installed", "sparkctl needs systemd (DGX OS 7 has it)")
    match = re.match(r"systemd (\d+)", out.stdout)
    if match is None:
        return Check(name, "fail", f"cannot read the version from {out.stdout.strip()[:60]!r}", None)
    version = int(match.group(1))
    if settings.systemd.bus == "system" and not host.path("/run/systemd/system").is_dir():
        return Check(
            name,
            "fail",
            f"systemd {version} is installed but is not running this system (no /run/systemd/system)",
            "run sparkctl on a host booted with systemd (a container without it cannot host the units)",
        )
    if version < SYSTEMD_MIN:
        return Check(
            name,
            "fail",
            f"systemd {version} is older than {SYSTEMD_MIN} (sparkctl.service uses PrivateIPC=)",
            "upgrade to DGX OS 7 / Ubuntu 24.04 (systemd 255)",
        )
    if version < SYSTEMD_TESTED:
        return Check(name, "warn", f"systemd {version}: works, but sparkctl is tested on 252 and 255", None)
    return Check(name, "pass", f"systemd {version}")


def check_cgroup2(host: Host, settings: Settings) -> Check:
    name = "cgroup v2"
    mounts = host.read("/proc/self/mounts") or ""
    kinds = {parts[1]: parts[2] for line in mounts.splitlines() if len(parts := line.split()) >= 3}
    kind = kinds.get("/sys/fs/cgroup")
    if kind == "cgroup2":
        return Check(name, "pass", "unified hierarchy on /sys/fs/cgroup")
    fix = (
        "boot with the unified hierarchy: add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX "
        "in /etc/default/grub, then sudo update-grub and reboot"
    )
    detail = f"/sys/fs/cgroup is {kind}" if kind else "no cgroup file system on /sys/fs/cgroup"
    return Check(name, "fail", f"{detail} (cgroup v1 or hybrid); Podman's systemd units need cgroup v2", fix)


def podman_version(host: Host) -> tuple[int, ...] | None:
    out = host.run(["podman", "--version"])
    return parse_version(out.stdout) if out is not None and out.returncode == 0 else None


def check_podman(host: Host, settings: Settings) -> Check:
    name = "Podman"
    out = host.run(["podman", "--version"])
    if out is None:
        return Check(name, "fail", "Podman is not installed", podman_fix(distro(host)))
    version = parse_version(out.stdout)
    if out.returncode != 0 or version is None:
        return Check(
            name, "fail", f"`podman --version` failed: {(out.stderr or out.stdout).strip()[:120]}", None
        )
    if version < QUADLET_MIN:
        return Check(
            name,
            "fail",
            f"Podman {shown(version)} predates Quadlet (4.4), which turns .container units into services",
            podman_fix(distro(host)),
        )
    if version < PODMAN_TESTED:
        return Check(
            name,
            "warn",
            f"Podman {shown(version)}: older than DGX OS 7's 4.9, not tested with sparkctl",
            "check the rendered units with `sparkctl render --check`",
        )
    return Check(name, "pass", f"Podman {shown(version)}")


def check_quadlet(host: Host, settings: Settings) -> Check:
    name = "Quadlet"
    found = next((p for p in QUADLET_PATHS if host.path(p).exists()), None)
    if found is None:
        podman = podman_version(host)
        return Check(
            name,
            "fail",
            "Quadlet's systemd generator is not installed",
            "sudo apt install --reinstall podman (Podman 4.4 or newer ships Quadlet)"
            if podman is not None and podman >= QUADLET_MIN
            else "it comes with Podman 4.4 or newer: see the Podman check",
        )
    out = host.run([str(host.path(found)), "-version"])
    version = parse_version(out.stdout) if out is not None and out.returncode == 0 else None
    podman = podman_version(host)
    if version is None:
        whose = f"Podman {shown(podman)}'s" if podman else "installed"
        return Check(name, "pass", f"{found} ({whose}; it does not report a version)")
    if podman is not None and version[:2] != podman[:2]:
        return Check(
            name,
            "warn",
            f"Quadlet {shown(version)} does not match Podman {shown(podman)}",
            "install Podman and its Quadlet from the same package (sudo apt install --reinstall podman)",
        )
    return Check(name, "pass", f"Quadlet {shown(version)} ({found})")


def check_notify_healthy(host: Host, settings: Settings) -> Check:
    name = "Notify=healthy"
    version = podman_version(host)
    if version is None:
        return Check(name, "warn", "unknown (no Podman version)", None)
    if version >= NOTIFY_HEALTHY:
        return Check(name, "pass", f"available (Podman {shown(version)})")
    return Check(
        name,
        "warn",
        f"not available in Podman {shown(version)} (needs 5.0); fine for sparkctl: its units become "
        "ready through their own ExecStartPost= probe, on 4.9 and 5.x alike",
        None,
    )


def check_podman_api(host: Host, settings: Settings) -> Check:
    name = "Podman API"
    if host.path(PODMAN_SOCKET).exists():
        return Check(name, "pass", f"{PODMAN_SOCKET} (used by sparkctl pull and sparkctl images)")
    return Check(
        name,
        "warn",
        f"{PODMAN_SOCKET} does not exist: `sparkctl pull` and `sparkctl images` talk to Podman through it",
        "sudo systemctl enable --now podman.socket",
    )
