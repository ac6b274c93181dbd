"""The doctor's checks of sparkctl's own service on this host: the gateway port, the API key file,
the polkit rule, the socket unit and whether the enabled models have their weights and images.

Each check is a `CheckFn` (see check.py) that reads the host only through its `Host`; systemd is
asked with `Host.systemctl`, on the bus the settings name, about the units `sparkctl.units.names`
spells.
"""

from __future__ import annotations

import os
import re

from sparkctl.apikeys import KeyStore
from sparkctl.catalog import load_catalog
from sparkctl.core.weights import check_weights
from sparkctl.errors import KeyFileError, SparkError
from sparkctl.paths import POLKIT_RULE as POLKIT_RULE_PATH
from sparkctl.settings import Settings, split_host_port
from sparkctl.tools.doctor.check import Check
from sparkctl.tools.doctor.host import Host
from sparkctl.units.names import DAEMON_SOCKET
from sparkctl.units.own import polkit_rule

POLKIT_RULE = str(POLKIT_RULE_PATH)
POLKITD_PATHS = ("/usr/lib/polkit-1/polkitd", "/usr/libexec/polkitd", "/usr/lib/policykit-1/polkitd")


def _socket_listens(host: Host, settings: Settings, address: str) -> bool:
    """Whether sparkctl's own socket unit is active and holds `address` (so it is not taken)."""
    out = host.systemctl(settings, "show", DAEMON_SOCKET, "--property=ActiveState,Listen")
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
    held, taken, demo_holds = [], [], []
    for address in settings.gateway.listen:
        host_part, port = split_host_port(address)
        if _socket_listens(host, settings, address):
            held.append(address)
        elif host.port_free(host_part, port):
            held.append(f"{address} free")
        elif (demo := host.demo()) is not None and demo.port == port:
            demo_holds.append(f"{address} is held by the running sparkctl demo ({demo.url})")
        else:
            owner = _port_owner(host, port)
            taken.append(f"{address} is taken" + (f" by {owner}" if owner else ""))
    if taken:
        return Check(
            name,
            "fail",
            "; ".join(taken) + f" (not by {DAEMON_SOCKET})",
            "stop that program, or move sparkctl: gateway.listen in /etc/sparkctl/sparkctl.toml, "
            "then sudo sparkctl install",
        )
    if demo_holds:
        # Not a failure: the demo lends the port and gives it back when it ends.
        return Check(
            name,
            "warn",
            "; ".join(demo_holds) + ": free again once the demo ends",
            "stop the demo (Ctrl-C where it runs) before sparkctl.socket needs the port, or move "
            "sparkctl: gateway.listen in /etc/sparkctl/sparkctl.toml",
        )
    return Check(
        name,
        "pass",
        ", ".join(h if h.endswith(" free") else f"{h} held by {DAEMON_SOCKET}" for h in held),
    )


def check_api_key(host: Host, settings: Settings) -> Check:
    name = "API key"
    if settings.gateway.auth == "none":
        return Check(
            name, "pass", "not needed: gateway.auth = none (refused unless every listener is loopback)"
        )
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
    try:
        wanted = polkit_rule(load_catalog(settings))
    except SparkError:
        return Check(name, "pass", f"{POLKIT_RULE} (not compared: the catalog does not load)")
    if installed != wanted:
        return Check(
            name,
            "warn",
            f"{POLKIT_RULE} does not name the catalog's enabled models: the daemon may not start "
            "the ones it lacks",
            "sudo sparkctl render",
        )
    return Check(name, "pass", POLKIT_RULE)


def check_socket_unit(host: Host, settings: Settings) -> Check:
    name = DAEMON_SOCKET
    enabled = host.systemctl(settings, "is-enabled", DAEMON_SOCKET)
    active = host.systemctl(settings, "is-active", DAEMON_SOCKET)
    if enabled is None or active is None:
        return Check(name, "fail", "systemctl is not installed", None)
    state, running = enabled.stdout.strip() or "not-found", active.stdout.strip()
    if state == "enabled" and running == "active":
        return Check(name, "pass", "enabled and listening")
    if state == "enabled":
        return Check(name, "warn", f"enabled but {running}", f"sudo systemctl start {DAEMON_SOCKET}")
    return Check(
        name,
        "fail",
        f"not enabled ({state}): nothing listens for the API at boot",
        f"sudo sparkctl install (or sudo systemctl enable --now {DAEMON_SOCKET})",
    )


def check_models(host: Host, settings: Settings) -> Check:
    name = "models"
    try:
        catalog = load_catalog(settings)
    except SparkError as e:
        return Check(name, "fail", e.message.splitlines()[0], "sparkctl models validate")
    images: dict[str, bool] = {}  # image → present, asked of Podman once per image
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
