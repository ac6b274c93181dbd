"""`sparkctl doctor`: is this host ready to run sparkctl, and if not, what to do about it.

Every check is a function of a `Host` (where files are, how commands run, disk space, whether a
port is free) and the settings, returning one pass/warn/fail `Check` with the fix. The real host
is `Host()`; tests build hosts in states that are hard to reach for real (no CDI spec, Podman 4.3,
a full disk, cgroup v1). A failure means sparkctl cannot work as configured; a warning means it
works, with a limit worth knowing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sparkctl.settings import Settings, split_host_port

Status = Literal["pass", "warn", "fail"]
GIB = 1024**3
POLKIT_RULE = "/etc/polkit-1/rules.d/50-sparkctl.rules"
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_FIX = "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
QUADLET_PATHS = (
    "/usr/libexec/podman/quadlet",
    "/usr/lib/podman/quadlet",
    "/usr/lib/systemd/system-generators/podman-system-generator",
)
POLKITD_PATHS = ("/usr/lib/polkit-1/polkitd", "/usr/libexec/polkitd", "/usr/lib/policykit-1/polkitd")
# sparkctl.service uses PrivateIPC= (systemd 248); the sandbox runs 252, DGX OS 7 ships 255.
SYSTEMD_MIN = 248
SYSTEMD_TESTED = 252
QUADLET_MIN = (4, 4)  # Podman 4.4 introduced Quadlet
PODMAN_TESTED = (4, 9)  # Ubuntu 24.04 / DGX OS 7
NOTIFY_HEALTHY = (5, 0)
DRIVER_MIN = 580  # CUDA 13 (the images' toolkit) needs an R580 driver
DISK_FAIL = 10 * GIB
DISK_WARN = 100 * GIB


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


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


def disk_of(path: Path) -> Disk | None:
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


def _version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# ----------------------------------------------------------------------------------------- checks
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
    return _version(out.stdout) if out is not None and out.returncode == 0 else None


def check_podman(host: Host, settings: Settings) -> Check:
    name = "Podman"
    out = host.run(["podman", "--version"])
    if out is None:
        return Check(name, "fail", "Podman is not installed", "sudo apt install podman")
    version = _version(out.stdout)
    if out.returncode != 0 or version is None:
        return Check(
            name, "fail", f"`podman --version` failed: {(out.stderr or out.stdout).strip()[:120]}", None
        )
    if version < QUADLET_MIN:
        return Check(
            name,
            "fail",
            f"Podman {_shown(version)} predates Quadlet (4.4), which turns .container units into services",
            "upgrade to DGX OS 7 / Ubuntu 24.04 (Podman 4.9) or a newer Podman",
        )
    if version < PODMAN_TESTED:
        return Check(
            name,
            "warn",
            f"Podman {_shown(version)}: older than DGX OS 7's 4.9, not tested with sparkctl",
            "check the rendered units with `sparkctl render --check`",
        )
    return Check(name, "pass", f"Podman {_shown(version)}")


def check_quadlet(host: Host, settings: Settings) -> Check:
    name = "Quadlet"
    found = next((p for p in QUADLET_PATHS if host.path(p).exists()), None)
    if found is None:
        return Check(
            name,
            "fail",
            "Quadlet's systemd generator is not installed",
            "sudo apt install podman (Podman 4.4 or newer ships Quadlet)",
        )
    out = host.run([str(host.path(found)), "-version"])
    version = _version(out.stdout) if out is not None and out.returncode == 0 else None
    podman = podman_version(host)
    if version is None:
        shown = f"Podman {_shown(podman)}'s" if podman else "installed"
        return Check(name, "pass", f"{found} ({shown}; it does not report a version)")
    if podman is not None and version[:2] != podman[:2]:
        return Check(
            name,
            "warn",
            f"Quadlet {_shown(version)} does not match Podman {_shown(podman)}",
            "install Podman and its Quadlet from the same package (sudo apt install --reinstall podman)",
        )
    return Check(name, "pass", f"Quadlet {_shown(version)} ({found})")


def check_notify_healthy(host: Host, settings: Settings) -> Check:
    name = "Notify=healthy"
    version = podman_version(host)
    if version is None:
        return Check(name, "warn", "unknown (no Podman version)", None)
    if version >= NOTIFY_HEALTHY:
        return Check(name, "pass", f"available (Podman {_shown(version)})")
    return Check(
        name,
        "warn",
        f"not available in Podman {_shown(version)} (needs 5.0); fine for sparkctl: its units become "
        "ready through their own ExecStartPost= probe, on 4.9 and 5.x alike",
        None,
    )


def check_podman_api(host: Host, settings: Settings) -> Check:
    name = "Podman API"
    sock = "/run/podman/podman.sock"
    if host.path(sock).exists():
        return Check(name, "pass", f"{sock} (used by sparkctl pull and sparkctl images)")
    return Check(
        name,
        "warn",
        f"{sock} does not exist: `sparkctl pull` and `sparkctl images` talk to Podman through it",
        "sudo systemctl enable --now podman.socket",
    )


def cdi_devices(text: str, filename: str) -> tuple[str | None, list[str]]:
    """(kind, device names) of one CDI spec file (YAML or JSON)."""
    try:
        if filename.endswith(".json"):
            data = json.loads(text)
        else:
            data = importlib.import_module("yaml").safe_load(text)  # PyYAML comes with huggingface_hub
    except Exception:
        return None, []
    if not isinstance(data, dict):
        return None, []
    devices = data.get("devices") or []
    names = [str(d.get("name")) for d in devices if isinstance(d, dict) and d.get("name") is not None]
    kind = data.get("kind")
    return (str(kind) if kind is not None else None), names


def check_cdi(host: Host, settings: Settings) -> Check:
    name = "NVIDIA CDI spec"
    seen: list[str] = []
    for directory in CDI_DIRS:
        d = host.path(directory)
        if not d.is_dir():
            continue
        for spec in sorted(d.iterdir()):
            if spec.suffix not in (".yaml", ".yml", ".json"):
                continue
            kind, devices = cdi_devices(host.read(f"{directory}/{spec.name}") or "", spec.name)
            seen.append(f"{directory}/{spec.name}")
            if kind == "nvidia.com/gpu" and "all" in devices:
                return Check(name, "pass", f"nvidia.com/gpu=all in {directory}/{spec.name}")
    where = f"none of {', '.join(seen)}" if seen else f"no spec in {' or '.join(CDI_DIRS)}"
    return Check(
        name,
        "fail",
        f"{where} defines nvidia.com/gpu=all, which every model unit asks Podman for (AddDevice=)",
        f"{CDI_FIX} (NVIDIA Container Toolkit; regenerate after every driver upgrade)",
    )


def check_driver(host: Host, settings: Settings) -> Check:
    name = "NVIDIA driver"
    out = host.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if out is None:
        return Check(
            name,
            "fail",
            "nvidia-smi is not installed: no NVIDIA driver",
            "DGX OS ships the driver; on plain Ubuntu 24.04: sudo ubuntu-drivers install, then reboot",
        )
    if out.returncode != 0:
        return Check(
            name,
            "fail",
            f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:160]}",
            "the driver is not loaded: reboot after a driver upgrade; see `sudo dmesg | grep -i nvidia`",
        )
    line = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    gpu, _, driver = (part.strip() for part in line.partition(","))
    major = _version(driver)
    if major is not None and major[0] < DRIVER_MIN:
        return Check(
            name,
            "warn",
            f"{gpu}, driver {driver}: sparkctl's images use CUDA 13, which needs driver {DRIVER_MIN}+",
            "upgrade the driver (DGX OS: sudo apt update && sudo apt full-upgrade)",
        )
    if "GB10" not in gpu:
        return Check(
            name, "warn", f"{gpu}, driver {driver}: not a GB10; the catalog is tuned for the DGX Spark"
        )
    return Check(name, "pass", f"{gpu}, driver {driver}")


def meminfo(host: Host) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in (host.read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def check_memory(host: Host, settings: Settings) -> Check:
    name = "unified memory"
    info = meminfo(host)
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return Check(name, "fail", "cannot read MemTotal/MemAvailable from /proc/meminfo", None)
    detail = f"{total / GIB:.1f} GiB total, {available / GIB:.1f} GiB available"
    if total < 100 * GIB:
        return Check(
            name,
            "warn",
            f"{detail}: the catalog's gpu_memory_utilization fractions assume a 128 GB Spark",
            "lower engine.gpu_memory_utilization (in /etc/sparkctl/models overrides) or memory_budget",
        )
    if available < total * settings.scheduler.memory_budget / 2:
        return Check(
            name,
            "warn",
            f"{detail}: a big model needs most of it, and waits (scheduler.memory_wait) until it is free",
            "if `sparkctl ps` shows no model loaded, see what holds it: `podman ps`, `nvidia-smi`, `top`",
        )
    return Check(name, "pass", detail)


def check_swap(host: Host, settings: Settings) -> Check:
    name = "swap"
    swap = meminfo(host).get("SwapTotal", 0)
    if swap > 0:
        return Check(name, "pass", f"{swap / GIB:.1f} GiB")
    return Check(
        name,
        "warn",
        "no swap: some engines spike host memory while compiling or capturing CUDA graphs at start",
        "sudo fallocate -l 64G /swap.img && sudo chmod 600 /swap.img && sudo mkswap /swap.img && "
        "sudo swapon /swap.img (and add it to /etc/fstab); vm.swappiness=10 keeps it for emergencies",
    )


def check_disk(host: Host, settings: Settings) -> Check:
    name = "HF cache disk"
    cache = settings.runtime.hf_cache
    disk = host.disk(cache)
    if disk is None:
        return Check(name, "fail", f"cannot measure the disk holding {cache}", None)
    where = str(cache) if disk.path == cache else f"{cache} (not created yet; measured {disk.path})"
    detail = f"{disk.free / GIB:.0f} GiB free of {disk.total / GIB:.0f} GiB at {where}"
    fix = "free space, or point runtime.hf_cache at a bigger disk in /etc/sparkctl/sparkctl.toml"
    if disk.free < DISK_FAIL:
        return Check(name, "fail", f"{detail}: too little for any model's weights", fix)
    if disk.free < DISK_WARN:
        return Check(name, "warn", f"{detail}: the larger catalog models take 60–120 GB each", fix)
    return Check(name, "pass", detail)


def _socket_listens(host: Host, settings: Settings, address: str) -> bool:
    out = host.systemctl(settings, "show", "sparkctl.socket", "--property=ActiveState,Listen")
    if out is None or out.returncode != 0:
        return False
    lines = out.stdout.splitlines()
    # One Listen= line per listener, e.g. "Listen=127.0.0.1:8009 (Stream)".
    listens = [line.removeprefix("Listen=").split(" ")[0] for line in lines if line.startswith("Listen=")]
    host_part, port = split_host_port(address)
    shown = f"[{host_part}]:{port}" if ":" in host_part else f"{host_part}:{port}"
    return "ActiveState=active" in lines and shown in listens


def _port_owner(host: Host, port: int) -> str | None:
    out = host.run(["ss", "-Hltnp", f"sport = :{port}"])
    if out is None or out.returncode != 0:
        return None
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', out.stdout)
    return f"{match.group(1)} (pid {match.group(2)})" if match else None


def check_port(host: Host, settings: Settings) -> Check:
    name = "gateway port"
    held, taken = [], []
    for address in settings.gateway.listen:
        host_part, port = split_host_port(address)
        if _socket_listens(host, settings, address):
            held.append(address)
        elif host.port_free(host_part, port):
            held.append(f"{address} free")
        else:
            owner = _port_owner(host, port)
            taken.append(f"{address} is taken" + (f" by {owner}" if owner else ""))
    if taken:
        return Check(
            name,
            "fail",
            "; ".join(taken) + " (not by sparkctl.socket)",
            "stop that program, or move sparkctl: gateway.listen in /etc/sparkctl/sparkctl.toml, "
            "then sudo sparkctl install",
        )
    return Check(
        name,
        "pass",
        ", ".join(h if h.endswith(" free") else f"{h} held by sparkctl.socket" for h in held),
    )


def check_api_key(host: Host, settings: Settings) -> Check:
    name = "API key"
    if settings.gateway.auth == "none":
        return Check(
            name, "pass", "not needed: gateway.auth = none (refused unless every listener is loopback)"
        )
    from sparkctl.apikeys import KeyStore
    from sparkctl.errors import KeyFileError

    path = settings.gateway.api_keys_file
    if not host.path(path).exists():
        return Check(
            name,
            "fail",
            f"no key file at {path}: every request would get 401",
            "sudo sparkctl install (creates an admin key) or sudo sparkctl keys add NAME",
        )
    try:
        store = KeyStore.load(host.path(path))
    except KeyFileError as e:
        if not os.access(host.path(path), os.R_OK):
            return Check(
                name, "warn", f"cannot read {path} as this user", "run sparkctl doctor as root (sudo)"
            )
        return Check(
            name,
            "fail",
            e.message.replace("\n", "; "),
            f"fix or remove {path}, then sudo sparkctl keys add NAME",
        )
    if not len(store):
        return Check(
            name, "fail", f"{path} holds no key: every request would get 401", "sudo sparkctl keys add NAME"
        )
    admins = sum(1 for e in store.entries() if e.admin)
    return Check(name, "pass", f"{len(store)} key{'s' if len(store) != 1 else ''} ({admins} admin) in {path}")


def check_polkit(host: Host, settings: Settings) -> Check:
    name = "polkit rule"
    if settings.systemd.bus != "system":
        return Check(name, "pass", f"not needed (systemd.bus = {settings.systemd.bus!r})")
    if not any(host.path(p).exists() for p in POLKITD_PATHS):
        return Check(
            name,
            "fail",
            "polkitd is not installed: the daemon (user sparkctl) could not start or stop model units",
            "sudo apt install polkitd",
        )
    installed = host.read(POLKIT_RULE)
    if installed is None:
        return Check(
            name,
            "fail",
            f"{POLKIT_RULE} is missing: the daemon may not start or stop model units",
            "sudo sparkctl install",
        )
    from sparkctl.paths import SHIPPED_UNITS

    shipped = (SHIPPED_UNITS / "sparkctl.polkit.rules").read_text()
    if installed != shipped:
        return Check(
            name, "warn", f"{POLKIT_RULE} differs from this sparkctl's rule", "sudo sparkctl install"
        )
    return Check(name, "pass", POLKIT_RULE)


def check_socket_unit(host: Host, settings: Settings) -> Check:
    name = "sparkctl.socket"
    enabled = host.systemctl(settings, "is-enabled", "sparkctl.socket")
    active = host.systemctl(settings, "is-active", "sparkctl.socket")
    if enabled is None or active is None:
        return Check(name, "fail", "systemctl is not installed", None)
    state, running = enabled.stdout.strip() or "not-found", active.stdout.strip()
    if state == "enabled" and running == "active":
        return Check(name, "pass", "enabled and listening")
    if state == "enabled":
        return Check(name, "warn", f"enabled but {running}", "sudo systemctl start sparkctl.socket")
    return Check(
        name,
        "fail",
        f"not enabled ({state}): nothing listens for the API at boot",
        "sudo sparkctl install (or sudo systemctl enable --now sparkctl.socket)",
    )


def check_models(host: Host, settings: Settings) -> Check:
    name = "models"
    from sparkctl.catalog import load_catalog
    from sparkctl.core.weights import check_weights
    from sparkctl.errors import SparkError

    try:
        catalog = load_catalog(settings)
    except SparkError as e:
        return Check(name, "fail", e.message.splitlines()[0], "sparkctl models validate")
    images: dict[str, bool] = {}
    ready: list[str] = []
    missing: list[str] = []
    for model in catalog.enabled:
        spec = model.spec
        cache = host.path(settings.runtime.hf_cache)
        weights = check_weights(cache, spec.source.hf_repo, spec.source.revision).present
        image_ok = True
        if spec.engine.runtime == "container" and spec.engine.image:
            if spec.engine.image not in images:
                out = host.run(["podman", "image", "exists", spec.engine.image])
                images[spec.engine.image] = out is not None and out.returncode == 0
            image_ok = images[spec.engine.image]
        (ready if weights and image_ok else missing).append(model.id)
    detail = f"{len(ready)} of {len(ready) + len(missing)} enabled models have their weights and image here"
    if not ready:
        return Check(
            name, "warn", detail, "sparkctl pull ID (and sparkctl images build for localhost/ images)"
        )
    return Check(name, "pass", detail + (f": {', '.join(ready[:8])}" + (" …" if len(ready) > 8 else "")))


CHECKS: tuple[Callable[[Host, Settings], Check], ...] = (
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
)


def run_checks(settings: Settings, host: Host | None = None) -> list[Check]:
    host = host or Host()
    results = []
    for check in CHECKS:
        try:
            results.append(check(host, settings))
        except Exception as e:  # one broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, "fail", f"the check itself failed: {type(e).__name__}: {e}", None))
    return results
