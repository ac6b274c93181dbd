"""The names of sparkctl's units (BRIEF §4.3): the only place one is spelled.

Model `ID` runs as `sparkctl-ID.service` (rendered from `sparkctl-ID.container` for a container)
with its own port `sparkctl-ID.socket`; the daemon is `sparkctl.service` with `sparkctl.socket`.
A model id becomes a unit name only after it passed the catalog's id rule, checked again here:
a unit name is also a path under the unit directories and an argument to systemctl.
"""

from __future__ import annotations

from sparkctl.catalog.spec import check_id

PREFIX = "sparkctl-"
DAEMON_SERVICE = "sparkctl.service"
DAEMON_SOCKET = "sparkctl.socket"
DAEMON_UNITS = (DAEMON_SERVICE, DAEMON_SOCKET)
# The engines' own Podman network (a Quadlet .network: Quadlet runs it as sparkctl-network.service,
# hence the catalog's reserved id "network") and its name in Podman.
ENGINE_NETWORK = "sparkctl.network"
ENGINE_NETWORK_NAME = "sparkctl"
# Globs for systemd's ListUnitsByPatterns and for the unit directories.
MODEL_UNITS_GLOB = f"{PREFIX}*"
ALL_UNITS_GLOBS = ("sparkctl.*", MODEL_UNITS_GLOB)


def generated_service(quadlet_file: str) -> str:
    """The service Quadlet generates from one of its files: `X.container` → `X.service`,
    `X.network` → `X-network.service`."""
    stem, _, kind = quadlet_file.rpartition(".")
    return f"{stem}.service" if kind == "container" else f"{stem}-{kind}.service"


def _checked(model_id: str) -> str:
    try:
        return check_id(model_id)
    except ValueError as e:
        raise ValueError(f"not a model id, so not a unit name: {e}") from None


def service_name(model_id: str) -> str:
    return f"{PREFIX}{_checked(model_id)}.service"


def socket_name(model_id: str) -> str:
    return f"{PREFIX}{_checked(model_id)}.socket"


def container_name(model_id: str) -> str:
    """The Quadlet file Quadlet turns into `service_name(model_id)`."""
    return f"{PREFIX}{_checked(model_id)}.container"
