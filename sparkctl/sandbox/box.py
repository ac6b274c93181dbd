"""A throwaway, real systemd 252 with its system bus, Podman 5 and Quadlet, for the integration
tests, the benchmarks and `sparkctl demo` on machines whose PID 1 is not systemd.

systemd runs as PID 1 of its own pid/mount/uts/ipc/cgroup namespaces over an overlay of the host's
root (stage2.sh); the host reaches it through DIR/run (the box's /run: the system bus socket and
Podman's API socket) and runs commands inside with nsenter. Everything is torn down by `down()`,
and a box left behind by a crashed run is found and removed by the next `up()` (`reap_stale`).
Needs root, and the substrate from install.sh.
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
from sparkctl.paths import SOURCE_ROOT

HERE = Path(__file__).resolve().parent
PREFIX = Path(os.environ.get("SPARKCTL_SANDBOX_PREFIX", "/opt/sparkctl-sandbox"))
ROOT = Path(os.environ.get("SPARKCTL_SANDBOX_ROOT", "/var/lib/sparkctl-sandbox"))
MARKER = ".sparkctl-box"
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
        _cgroup2_root()
    except SandboxError as e:
        return e.message
    return None


def _cgroup2_root() -> Path:
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


def _proc_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


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
        box = cls(path=path, net=net, shares=_default_shares(shares))
        box._boot()
        return box

    def _boot(self) -> None:
        if self.path.exists():
            self.down()
        t0 = time.monotonic()
        for sub in ("run", ".ovl", "storage", "quadlet", "bin"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).write_text(
            json.dumps({"owner": os.getpid(), "owner_start": _proc_start(os.getpid())})
        )
        self._mount_run()
        self.cgroup.mkdir(exist_ok=True)
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
        deadline = t0 + self.boot_timeout
        state = ""
        while time.monotonic() < deadline:
            state = self._system_state()
            if state in ("running", "degraded"):
                break
            if launcher.poll() is not None:
                tail = self.console_tail()
                self.down()
                raise SandboxError(f"the box failed to boot:\n{tail}")
            time.sleep(0.05)
        else:
            tail = self.console_tail()
            self.down()
            raise SandboxError(
                f"the box did not boot within {self.boot_timeout:.0f}s (state {state!r}):\n{tail}"
            )
        self._write_wrappers()
        sock = self.path / "run/podman/podman.sock"
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--plain", "--no-legend", check=False).stdout
            raise SandboxError(f"the box booted degraded; failed units:\n{failed}")

    def _mount_run(self) -> None:
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755,nosuid,nodev,size=2g",
                "sparkctl-box-run",
                str(self.path / "run"),
            ],
            check=True,
            env=dict(os.environ, LIBMOUNT_UTAB=str(self.path / ".utab")),
        )

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
            while unshare and _running(unshare) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._kill_cgroup()
        self._stop_launcher()
        self._unmount_all()
        if keep_logs is not None and (self.path / "console.log").exists():
            shutil.copy(self.path / "console.log", keep_logs / "console.log")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.path)], check=False)

    def _kill_cgroup(self) -> None:
        try:
            cg = self.cgroup
        except SandboxError:
            return
        if not cg.exists():
            return
        if _cgroup_procs(cg):
            with contextlib.suppress(OSError):
                (cg / "cgroup.kill").write_text("1")
            deadline = time.monotonic() + 5
            while _cgroup_procs(cg) and time.monotonic() < deadline:
                time.sleep(0.02)
        for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            cg.rmdir()

    def _stop_launcher(self) -> None:
        try:
            pid = int((self.path / "launcher.pid").read_text())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"launcher.py" not in cmdline or str(self.path).encode() not in cmdline:
            return
        deadline = time.monotonic() + 5
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # it is our child when this process booted the box

    def _unmount_all(self) -> None:
        out = subprocess.run(
            ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
        ).stdout
        prefix = str(self.path)
        mounts = [m for m in out.splitlines() if m == prefix or m.startswith(prefix + "/")]
        env = dict(os.environ, LIBMOUNT_UTAB=str(self.path / ".utab"))
        for m in sorted(mounts, key=len, reverse=True):
            if subprocess.run(["umount", m], env=env, capture_output=True, check=False).returncode:
                subprocess.run(["umount", "-l", m], env=env, capture_output=True, check=False)

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


def _running(pid: int) -> bool:
    """Alive and not a zombie; reaps it when it is our own exited child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cgroup_procs(cg: Path) -> list[str]:
    procs = []
    for f in cg.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            procs += f.read_text().split()
    return procs


def _default_shares(extra: Iterable[Path]) -> list[Path]:
    """Host paths the box must see as they are: this interpreter, its base, the source tree."""
    wanted = [Path(sys.prefix), Path(sys.base_prefix), *(p for p in [SOURCE_ROOT] if p), *extra]
    out: list[Path] = []
    for p in sorted({w.resolve() for w in wanted}, key=lambda p: len(p.parts)):
        if p != Path("/") and not any(p.is_relative_to(o) for o in out):
            out.append(p)
    return out


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
        if owner > 0 and _proc_start(owner) is not None and _proc_start(owner) == start:
            continue
        Box(path=d).down()
        reaped.append(d)
    return reaped


def boxes(root: Path = ROOT) -> Sequence[Path]:
    return [d for d in sorted(root.iterdir()) if (d / MARKER).is_file()] if root.is_dir() else []
