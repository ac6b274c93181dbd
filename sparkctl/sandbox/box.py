"""A throwaway, real systemd 252 with its system bus, Podman 5 and Quadlet, for the integration
tests, the benchmarks and `sparkctl demo` on machines whose PID 1 is not systemd.

systemd runs as PID 1 of its own pid/mount/uts/ipc/cgroup namespaces over an overlay of the host's
root (stage2.sh); the host reaches it through DIR/run (the box's /run: the system bus socket and
Podman's API socket) and runs commands inside with nsenter. Everything is torn down by `down()`,
and a box left behind by a crashed run is found and removed by the next `up()` (`reap_stale`).
Needs root, and the substrate from install.sh.

This module holds the Box, and finding and reaping boxes; what it needs of the host is in host.py
(locations, checks, shares), procs.py (processes, cgroups, the launcher) and mounts.py. The names
callers import from here (ROOT, PREFIX, INSTALL_HINT, unavailable_reason, …) are re-exported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.errors import SandboxError
from sparkctl.sandbox.host import HERE, INSTALL_HINT, PREFIX, ROOT, default_shares, unavailable_reason
from sparkctl.sandbox.host import cgroup2_root as _cgroup2_root
from sparkctl.sandbox.mounts import mount_run, unmount_all
from sparkctl.sandbox.procs import kill_cgroup, proc_start, running, stop_launcher

# Re-exported: tests, bench and `sparkctl demo` reach the host names through this module
# (test_sandbox.py reads _cgroup2_root to look for leftover box cgroups).
__all__ = [
    "HERE",
    "INSTALL_HINT",
    "MARKER",
    "PREFIX",
    "ROOT",
    "Box",
    "_cgroup2_root",
    "boxes",
    "reap_stale",
    "unavailable_reason",
]

MARKER = ".sparkctl-box"


@dataclass
class Box:
    path: Path
    net: str = "host"  # "host": share the host's network namespace; "private": loopback only
    shares: list[Path] = field(default_factory=list)
    boot_timeout: float = 60.0
    poweroff_grace: float = 3.0

    # ---------------------------------------------------------------------------------- addresses
    @property
    def bus_address(self) -> str:
        return f"unix:path={self.path}/run/dbus/system_bus_socket"

    @property
    def container_host(self) -> str:
        return f"unix://{self.path}/run/podman/podman.sock"

    @property
    def quadlet_dir(self) -> Path:
        """The box's /etc/containers/systemd, writable from the host."""
        return self.path / "quadlet"

    @property
    def unit_dir(self) -> Path:
        """The box's /run/systemd/system, writable from the host."""
        return self.path / "run/systemd/system"

    @property
    def cgroup(self) -> Path:
        digest = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        return _cgroup2_root() / f"sparkctl-box-{digest}"

    def env(self) -> dict[str, str]:
        return {
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
            "CONTAINER_HOST": self.container_host,
            "SPARKCTL_BOX_DIR": str(self.path),
        }

    # ---------------------------------------------------------------------------------- lifecycle
    @classmethod
    def up(
        cls, name: str | None = None, *, net: str = "host", shares: Iterable[Path] = (), root: Path = ROOT
    ) -> Box:
        reason = unavailable_reason()
        if reason:
            raise SandboxError(reason)
        root.mkdir(parents=True, exist_ok=True)
        reap_stale(root)
        path = root / (name or f"b{os.getpid()}")
        if len(str(path)) > 60:  # unix socket paths under DIR/run must stay below 108 bytes
            raise SandboxError(f"box path too long for unix sockets: {path}")
        box = cls(path=path, net=net, shares=default_shares(shares))
        box._boot()
        return box

    def _boot(self) -> None:
        if self.path.exists():
            self.down()
        deadline = time.monotonic() + self.boot_timeout
        self._prepare()
        state = self._await_system(self._launch(), deadline)
        self._write_wrappers()
        sock = self.path / "run/podman/podman.sock"
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--plain", "--no-legend", check=False).stdout
            raise SandboxError(f"the box booted degraded; failed units:\n{failed}")

    def _prepare(self) -> None:
        """DIR's layout, the marker naming its owner (for reap_stale), its /run, its cgroup."""
        for sub in ("run", ".ovl", "storage", "quadlet", "bin"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).write_text(
            json.dumps({"owner": os.getpid(), "owner_start": proc_start(os.getpid())})
        )
        mount_run(self.path)
        self.cgroup.mkdir(exist_ok=True)

    def _launch(self) -> subprocess.Popen[bytes]:
        """Start launcher.py, detached, which makes stage2.sh (then systemd) the box's PID 1."""
        env = dict(
            os.environ, SPARKCTL_BOX_NET=self.net, SPARKCTL_BOX_SHARES=":".join(str(s) for s in self.shares)
        )
        with open(self.path / "launcher.log", "wb") as log:
            launcher = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "launcher.py"),
                    str(self.path),
                    str(HERE / "stage2.sh"),
                    str(PREFIX),
                    str(self.cgroup),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        (self.path / "launcher.pid").write_text(f"{launcher.pid}\n")
        return launcher

    def _await_system(self, launcher: subprocess.Popen[bytes], deadline: float) -> str:
        """systemd's state once it is up ("running" or "degraded"); if it never gets there, the
        box is torn down and SandboxError carries the tail of its console."""
        state = ""
        while time.monotonic() < deadline:
            state = self._system_state()
            if state in ("running", "degraded"):
                return state
            if launcher.poll() is not None:
                tail = self.console_tail()
                self.down()
                raise SandboxError(f"the box failed to boot:\n{tail}")
            time.sleep(0.05)
        tail = self.console_tail()
        self.down()
        raise SandboxError(f"the box did not boot within {self.boot_timeout:.0f}s (state {state!r}):\n{tail}")

    def _system_state(self) -> str:
        if not (self.path / "run/dbus/system_bus_socket").exists():
            return ""
        out = subprocess.run(
            [
                "busctl",
                f"--address={self.bus_address}",
                "get-property",
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "SystemState",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.split('"')[1] if out.returncode == 0 and '"' in out.stdout else ""

    def _unshare_pid(self) -> int | None:
        try:
            pid = int((self.path / "unshare.pid").read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if cmdline[:1] == [b"unshare"] and str(self.path).encode() in cmdline else None

    @property
    def init_pid(self) -> int | None:
        """Host pid of the box's PID 1 (systemd), if it runs."""
        u = self._unshare_pid()
        if u is None:
            return None
        try:
            children = Path(f"/proc/{u}/task/{u}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def down(self, *, keep_logs: Path | None = None) -> None:
        """Power the box off, kill what is left of it (only its own cgroup), unmount, remove DIR."""
        if not (self.path / MARKER).exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise SandboxError(f"{self.path} is not a sparkctl box; not removing it")
            shutil.rmtree(self.path, ignore_errors=True)
            return
        init = self.init_pid
        if init is not None:
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                (keep_logs / "journal.log").write_text(self.journal(lines=None))
            unshare = self._unshare_pid()
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGRTMIN + 4)  # systemd: poweroff (in a container it exits)
            # A clean poweroff takes ~0.2 s; something ignoring SIGTERM (a container started by
            # hand) would hold it for its stop timeout. The box is throwaway: after a grace
            # period its cgroup is killed outright.
            deadline = time.monotonic() + self.poweroff_grace
            while unshare and running(unshare) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._kill_cgroup()
        stop_launcher(self.path)
        unmount_all(self.path)
        if keep_logs is not None and (self.path / "console.log").exists():
            shutil.copy(self.path / "console.log", keep_logs / "console.log")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=False)

    def _kill_cgroup(self) -> None:
        try:
            cg = self.cgroup
        except SandboxError:
            return
        kill_cgroup(cg)

    # ---------------------------------------------------------------------------------- inside
    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 60,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the box (its namespaces, its root; the working directory is /)."""
        init = self.init_pid
        if init is None:
            raise SandboxError(f"the box at {self.path} is not running")
        cmd = ["nsenter", "-t", str(init), "-m", "-u", "-i", "-n", "-p", "-C", "--"]
        if env:
            cmd += ["env", *(f"{k}={v}" for k, v in env.items())]
        proc = subprocess.run(
            [*cmd, *argv], capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                f"`{' '.join(argv)}` failed in the box (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def journal(self, *, unit: str | None = None, since: float | None = None, lines: int | None = 200) -> str:
        args = ["journalctl", "--no-pager", "-o", "short-precise"]
        if unit:
            args += ["-u", unit]
        if since is not None:
            args += [f"--since=@{since:.6f}"]
        if lines is not None:
            args += ["-n", str(lines)]
        return self.run(*args, check=False).stdout

    def console_tail(self, n: int = 40) -> str:
        try:
            text = (self.path / "console.log").read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-n:])

    def _write_wrappers(self) -> None:
        """DIR/bin/{systemctl,journalctl,…} run inside the box: handy when debugging by hand."""
        for tool in (
            "systemctl",
            "journalctl",
            "systemd-run",
            "systemd-analyze",
            "busctl",
            "podman",
            "loginctl",
        ):
            wrapper = self.path / "bin" / tool
            wrapper.write_text(
                f"#!/bin/sh\n# runs {tool} inside the sparkctl box at {self.path}\n"
                f'exec nsenter -t "$(cat {self.path}/init.pid)" -m -u -i -n -p -C -- {tool} "$@"\n'
            )
            wrapper.chmod(0o755)
        (self.path / "init.pid").write_text(f"{self.init_pid}\n")


def reap_stale(root: Path = ROOT) -> list[Path]:
    """Remove boxes whose owning process is gone (a crashed or killed test run)."""
    reaped: list[Path] = []
    if not root.is_dir():
        return reaped
    for d in sorted(root.iterdir()):
        marker = d / MARKER
        if not marker.is_file():
            continue
        try:
            info = json.loads(marker.read_text())
            owner, start = int(info["owner"]), info.get("owner_start")
        except (OSError, ValueError, KeyError, TypeError):
            owner, start = -1, None
        if owner > 0 and proc_start(owner) is not None and proc_start(owner) == start:
            continue
        Box(path=d).down()
        reaped.append(d)
    return reaped


def boxes(root: Path = ROOT) -> Sequence[Path]:
    return [d for d in sorted(root.iterdir()) if (d / MARKER).is_file()] if root.is_dir() else []
