"""Which distribution a host runs, and how Podman with Quadlet gets onto it.

`apt install podman` is the right fix only where it brings Podman 4.4 or newer (Quadlet came
with 4.4): DGX OS 7 / Ubuntu 24.04 (4.9, from universe) and Debian 13 (5.4). Debian 12's Podman is
4.3 and bookworm-backports carries none; Ubuntu 22.04 (DGX OS 6) has 3.4. The Kubic repositories
that once carried newer builds for Debian and Ubuntu are no longer maintained by the Podman
project, which advises a newer release of the distribution instead; so does the doctor.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkctl.tools.doctor.host import Host


@dataclass(frozen=True, slots=True)
class Distro:
    id: str  # os-release ID: "debian", "ubuntu", …
    version: str  # os-release VERSION_ID: "12", "24.04"
    name: str  # what to call it: "Debian 12", "DGX OS 7 (Ubuntu 24.04)"
    dgx: bool  # DGX OS (NVIDIA's Ubuntu, with /etc/dgx-release)


def os_release(text: str) -> dict[str, str]:
    """/etc/os-release's KEY=value lines, unquoted."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip("\"'")
    return out


def distro(host: Host) -> Distro:
    fields = os_release(host.read("/etc/os-release") or host.read("/usr/lib/os-release") or "")
    ident, version = fields.get("ID", "").lower(), fields.get("VERSION_ID", "")
    dgx = host.path("/etc/dgx-release").exists()
    if ident == "ubuntu" and dgx:
        major = {"24.04": "7", "22.04": "6"}.get(version)
        name = f"DGX OS {major} (Ubuntu {version})" if major else f"DGX OS (Ubuntu {version})"
    elif ident in ("debian", "ubuntu") and version:
        name = f"{ident.capitalize()} {version}"
    else:
        name = fields.get("PRETTY_NAME") or fields.get("NAME") or "this distribution"
    return Distro(ident, version, name, dgx)


def _version(d: Distro) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in d.version.split("."))
    except ValueError:
        return ()


def podman_fix(d: Distro) -> str:
    """How to get a Podman with Quadlet (4.4 or newer) on this distribution."""
    version = _version(d)
    if d.id == "debian" and version and version[0] <= 12:
        return (
            f"on {d.name} `apt install podman` gives Podman 4.3, which has no Quadlet, and "
            "bookworm-backports has no Podman: upgrade to Debian 13 (its `sudo apt install podman` "
            "gives 5.4, with Quadlet) or run sparkctl on DGX OS 7 / Ubuntu 24.04 (Podman 4.9); "
            "meanwhile `sparkctl demo` runs its own Podman 5 in a sandbox"
        )
    if d.id == "debian" and version:
        return f"sudo apt update && sudo apt install podman: {d.name} ships Podman 5, with Quadlet"
    if d.id == "ubuntu" and version and version < (24, 4):
        return (
            f"{d.name} packages Podman 3.4, which has no Quadlet: upgrade to "
            + ("DGX OS 7" if d.dgx else "Ubuntu 24.04")
            + " (Podman 4.9 with Quadlet: `sudo apt install podman`)"
        )
    if d.id == "ubuntu" and version:
        shipped = "Podman 4.9 (universe)" if version == (24, 4) else "Podman 5"
        return f"sudo apt update && sudo apt install podman: {d.name} ships {shipped}, with Quadlet"
    return "install Podman 4.4 or newer (it brings Quadlet) from your distribution's packages"
