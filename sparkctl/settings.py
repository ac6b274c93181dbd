"""Daemon configuration (BRIEF §4.2): TOML from --config, else $SPARKCTL_CONFIG, else
/etc/sparkctl/sparkctl.toml, else the defaults below. Unknown keys are errors, as in the catalog.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError, model_validator

from sparkctl.errors import ConfigError
from sparkctl.paths import SHIPPED_CATALOG
from sparkctl.quantities import Duration, IdleTimeout, Size
from sparkctl.validation import ID_PATTERN, FieldError, StrictModel, issues_from_validation, read_toml

DEFAULT_CONFIG = Path("/etc/sparkctl/sparkctl.toml")
ENV_CONFIG = "SPARKCTL_CONFIG"

FilePath = Annotated[Path, Field(strict=False)]


def split_host_port(value: str) -> tuple[str, int]:
    """ "127.0.0.1:8009" / "[::1]:8009" / "0.0.0.0:80" → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'must be "HOST:PORT" (e.g. "127.0.0.1:8009"), got {value!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _listen(value: str) -> str:
    split_host_port(value)
    return value


_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _origin_entry(entry: str) -> str:
    if entry in ("*", "local") or re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s]+", entry):
        return entry
    raise ValueError(
        'must be an origin like "http://localhost:3000" (scheme://host[:port], no path), a pattern '
        f'like "http://localhost:*", "*" or "local", got {entry!r}'
    )


def _process_user(value: str) -> str:
    if not _USER_RE.fullmatch(value):
        raise ValueError(f'must be "dynamic", "root" or a user name, got {value!r}')
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Listen = Annotated[str, AfterValidator(_listen)]
Port = Annotated[int, Field(gt=0, lt=65536)]


class GatewaySettings(StrictModel):
    listen: list[Listen] = Field(default_factory=lambda: ["127.0.0.1:8009"], min_length=1)
    auth: Literal["required", "none"] = "required"
    api_keys_file: FilePath = Path("/etc/sparkctl/api-keys")
    # Exact origins, patterns ("http://localhost:*"), "*" or "local" (gateway/cors.py).
    cors_origins: list[Annotated[str, AfterValidator(_origin_entry)]] = Field(default_factory=list)
    max_body: Size = 64 * 1024**2
    queue_limit: int = Field(default=256, ge=1)
    # A client that has not sent its whole request body within this long gets 408: a stalled
    # upload must not hold a connection (and memory) forever.
    body_timeout: Duration = 60.0
    # Where the per-model sockets (sparkctl-ID.socket) listen; loopback like the gateway's default.
    direct_host: str = "127.0.0.1"
    # Open TCP connections beyond which new ones are refused as they come (the admin socket never
    # is), and how long a new connection may take to send its request's headers (BRIEF §9).
    max_connections: int = Field(default=4096, ge=1)
    header_timeout: Duration = 30.0
    # Request bodies held at once, all requests together (waiting ones included): beyond it a new
    # request gets 429, so queued bodies cannot exhaust the daemon's memory (MemoryMax= in its unit).
    body_budget: Size = 1024**3
    # How long in-flight responses get to finish when the daemon stops or restarts; a stream
    # still running then ends with an error event. The unit's TimeoutStopSec= is this + 30 s.
    shutdown_grace: Duration = 60.0
    # `/metrics` without a key for a loopback client (BRIEF §4.5). A request that came through a
    # reverse proxy (it sent Forwarded or X-Forwarded-For) always needs one; set this false when a
    # local proxy that adds neither publishes the port.
    open_metrics: bool = True

    @model_validator(mode="after")
    def _auth_none_only_on_loopback(self) -> GatewaySettings:
        if self.auth == "none":
            exposed = [a for a in self.listen if not is_loopback(split_host_port(a)[0])]
            if not is_loopback(self.direct_host):
                exposed.append(f"{self.direct_host} (direct_host)")
            if exposed:
                raise ValueError(
                    'auth = "none" is refused unless every listener is loopback; '
                    f"not loopback: {', '.join(exposed)}"
                )
        return self


class CatalogSettings(StrictModel):
    dirs: list[FilePath] = Field(default_factory=lambda: [SHIPPED_CATALOG, Path("/etc/sparkctl/models")])
    port_base: Port = 18100
    direct_port_base: Port = 18300
    # How many ports above each base the automatic assignment may use.
    port_span: int = Field(default=200, ge=1, le=10000)


class SystemdSettings(StrictModel):
    bus: str = "system"  # "system" | "user" | a D-Bus address ("unix:path=…")
    quadlet_dir: FilePath = Path("/etc/containers/systemd")
    unit_dir: FilePath = Path("/etc/systemd/system")

    @model_validator(mode="after")
    def _bus(self) -> SystemdSettings:
        if self.bus not in ("system", "user") and ":" not in self.bus:
            raise ValueError(
                f'bus must be "system", "user" or a D-Bus address like "unix:path=/run/…", got {self.bus!r}'
            )
        return self


class SchedulerSettings(StrictModel):
    memory_budget: float = Field(default=0.94, gt=0, le=1)
    idle_timeout: IdleTimeout = 20 * 60.0
    drain_timeout: Duration = 10 * 60.0
    memory_wait: Duration = 60.0
    # A ready engine is asked for its health this often; one that has not answered this many
    # times in a row is hung (frozen, deadlocked): its requests end with an error and it is
    # restarted. vLLM answers /health from its API process even while it generates.
    health_interval: Duration = 10.0
    health_failures: int = Field(default=3, ge=1)


class RuntimeSettings(StrictModel):
    hf_cache: FilePath = Path("/var/lib/sparkctl/huggingface")
    container_network: Literal["bridge", "host"] = "bridge"
    # Compilation caches (vLLM, torch inductor, triton, FlashInfer JIT) kept across starts: they
    # cut minutes off a cold start. Shared by all models; entries are keyed by content hash.
    compile_cache: FilePath = Path("/var/cache/sparkctl/compile")
    # The sparkctl executable the rendered units call for their readiness probe.
    sparkctl: FilePath = Path("/usr/local/bin/sparkctl")
    # Path of the HF cache inside containers.
    container_hf_home: FilePath = Path("/root/.cache/huggingface")
    # The engine key's environment file (sparkctl/apikeys/engine.py): every model unit reads it,
    # the daemon gets it as a credential. Written by `sparkctl install`; without it, engines
    # take no key.
    engine_env: FilePath = Path("/etc/sparkctl/engine.env")
    # What the daemon learns and keeps across restarts (BRIEF §9): models' load times and more.
    state_dir: FilePath = Path("/var/lib/sparkctl/state")
    # Who a process engine (engine.runtime = "process") runs as: "dynamic" (systemd's
    # DynamicUser=, a fresh unprivileged user per unit), a user name (one whose home holds the
    # engine's virtualenv, say), or "root" (no confinement by user; not recommended).
    process_user: Annotated[str, AfterValidator(_process_user)] = "dynamic"


_NODE_RE = re.compile(ID_PATTERN)
# A network interface name as the kernel allows it (IFNAMSIZ: 15 bytes, no '/', no whitespace);
# it is handed to NCCL, Gloo, UCX and Ray in environment variables.
_INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_HOST_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _node_name(value: str) -> str:
    if not _NODE_RE.fullmatch(value):
        raise ValueError(
            f"must match {ID_PATTERN} (lowercase letters, digits, '.', '_', '-'; at most 64), "
            f"like a model id, got {value!r}"
        )
    return value


def default_node() -> str:
    """This node's name when [cluster] node is not set: the hostname, lowercased (hostnames are
    case-insensitive; node names, like model ids, are lowercase). A default is not validated like
    a configured value, so one that does not fit the pattern (a long FQDN) becomes its first
    label, cut to fit."""
    name = socket.gethostname().lower()
    if _NODE_RE.fullmatch(name):
        return name
    label = re.sub(r"[^a-z0-9_-]", "-", name.split(".")[0])[:64].strip("-_")
    return label if _NODE_RE.fullmatch(label) else "localhost"


def _peer_url(value: str) -> str:
    """`http://HOST:PORT` (or https): a gateway's base, with nothing after it — paths are
    sparkctl's to add, and credentials belong in api_key_file, never in a URL."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    bare = not (parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password)
    valid_host = bool(_HOST_RE.fullmatch(host)) or _is_ip(host)
    if parts.scheme not in ("http", "https") or not valid_host or port is None or not bare:
        raise ValueError(f'must be "http://HOST:PORT" (a peer\'s gateway, no path), got {value!r}')
    return value.rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _link_address(value: str) -> str:
    # It becomes VLLM_HOST_IP, a --master-addr and an IPAddressAllow= entry: an address, not a
    # name (a name may resolve to another network than the link's).
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f'must be an IP address on the Sparks\' link (e.g. "192.168.100.1"), got {value!r}'
        ) from None


LinkAddress = Annotated[str, AfterValidator(_link_address)]


def _interface(value: str) -> str:
    if not _INTERFACE_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f'must be a network interface name (e.g. "enp1s0f1np1"), got {value!r}')
    return value


NodeName = Annotated[str, AfterValidator(_node_name)]


class PeerSettings(StrictModel):
    """Another Spark's sparkctl (BRIEF §9): its node name, its gateway, and a file holding an
    admin key of its own (read when the daemon starts; mode 0640 root:sparkctl, like api-keys)."""

    name: NodeName
    url: Annotated[str, AfterValidator(_peer_url)]
    api_key_file: FilePath
    # The peer's address on the direct link, for models that span nodes (its workers reach a head
    # here, its head is reached here); unset: the URL's host, when that is an address.
    address: LinkAddress | None = None

    @property
    def link_address(self) -> str | None:
        if self.address is not None:
            return self.address
        host = urlsplit(self.url).hostname or ""
        return host if _is_ip(host) else None


class ClusterSettings(StrictModel):
    """A cluster of Sparks (BRIEF §9, #15): every node lists the others' models and relays
    requests for them. No peers: one Spark, as before."""

    node: NodeName = Field(default_factory=default_node)
    peers: list[PeerSettings] = Field(default_factory=list)
    # The NIC of the Sparks' direct link (the QSFP port), passed to NCCL, Gloo, UCX and Ray.
    interface: Annotated[str, AfterValidator(_interface)] | None = None
    head_port: Port = 6379
    # This node's own address on the link: VLLM_HOST_IP of the parts of spanning models that run
    # here, and the head's address (Ray's, or --master-addr) when it owns one.
    address: LinkAddress | None = None
    # vLLM's own multi-node mode (serve.multinode = "native"): the head's --master-port
    # (vLLM's default).
    master_port: Port = 29501
    # How often each peer's /v1/models is asked for (also on demand, for a model no node lists),
    # and how long a peer gets to accept a connection: a peer that does not answer makes its
    # models unavailable and their requests 503 peer_unavailable at once, never a hang.
    poll_interval: Duration = 5.0
    connect_timeout: Duration = 1.0
    # A poll's answer (the whole of it) must come within this; a peer that accepts but does not
    # answer (a hung daemon) is down as surely as one that refuses.
    poll_timeout: Duration = 3.0
    # A spanning model's owner holds each other node it spans by a reservation of this length,
    # renewed while the model runs (every third of it, at most every two seconds): a dead owner
    # or a pulled cable frees the other nodes within this (1s to 600s).
    reservation_lease: Duration = Field(default=30.0, ge=1.0, le=600.0)

    @model_validator(mode="after")
    def _peers_are_others(self) -> ClusterSettings:
        seen: set[str] = set()
        for i, peer in enumerate(self.peers):
            if peer.name == self.node:
                raise FieldError(
                    f"peers.{i}.name",
                    f"{peer.name!r} is this node's own name (cluster.node): a peer is another Spark",
                )
            if peer.name in seen:
                raise FieldError(f"peers.{i}.name", f"{peer.name!r} is named twice")
            seen.add(peer.name)
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.peers)


class Settings(StrictModel):
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    systemd: SystemdSettings = Field(default_factory=SystemdSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)


def user_config_path(home: Path | None = None) -> Path:
    """Where `sparkctl install --user` keeps a user's configuration."""
    base = os.environ.get("XDG_CONFIG_HOME") or str((home or Path.home()) / ".config")
    return Path(base) / "sparkctl" / "sparkctl.toml"


def config_path(explicit: Path | None) -> Path | None:
    """Which file configures this run: --config, $SPARKCTL_CONFIG, the default if present, or none.
    (A user other than root who ran `sparkctl install --user` gets that configuration before the
    system-wide one.)"""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    if os.geteuid() != 0 and (mine := user_config_path()).exists():
        return mine
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_settings(explicit: Path | None = None) -> Settings:
    path = config_path(explicit)
    if path is None:
        return Settings()
    data, issues = read_toml(path)
    if data is None:
        raise ConfigError(issues)
    _resolve_relative_dirs(data, path.parent)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(issues_from_validation(path, Settings, e)) from None


def _resolve_relative_dirs(data: dict[str, object], base: Path) -> None:
    """Relative catalog dirs (and peers' key files) are relative to the configuration file, not
    the working directory."""
    catalog = data.get("catalog")
    if isinstance(catalog, dict) and isinstance(catalog.get("dirs"), list):
        catalog["dirs"] = [
            str(base / d) if isinstance(d, str) and not Path(d).is_absolute() else d for d in catalog["dirs"]
        ]
    cluster = data.get("cluster")
    peers = cluster.get("peers") if isinstance(cluster, dict) else None
    for peer in peers if isinstance(peers, list) else []:
        key_file = peer.get("api_key_file") if isinstance(peer, dict) else None
        if isinstance(key_file, str) and not Path(key_file).is_absolute():
            peer["api_key_file"] = str(base / key_file)
