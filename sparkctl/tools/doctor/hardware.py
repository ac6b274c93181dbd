"""The doctor's checks of the machine under the models: the NVIDIA CDI spec and driver, unified
memory, swap and the disk holding the HF cache.

Each check is a `CheckFn` (see check.py) that reads the host only through its `Host`. The limits
below are the DGX Spark's: a GB10 with 128 GB of unified memory and CUDA 13 images.
"""

from __future__ import annotations

import importlib
import json

from sparkctl.settings import Settings
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.host import Host, parse_version

GIB = 1024**3
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_FIX = "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
DRIVER_MIN = 580  # CUDA 13 (the images' toolkit) needs an R580 driver
DISK_FAIL = 10 * GIB
DISK_WARN = 100 * GIB


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
    major = parse_version(driver)
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
