"""Catalog → unit files. Pure: no I/O beyond reading the templates shipped in the package.

Per enabled model: a Quadlet `.container` (runtime "container") or a plain `.service` (runtime
"process"), both becoming `sparkctl-ID.service`, plus `sparkctl-ID.socket`, the model's own port,
handed to the daemon (BRIEF §4.3). Output is deterministic: same catalog and settings, same bytes.

A model that spans Sparks (serve.nodes > 1) renders, under the same names, its head on the node
that owns it and a worker on each other node it spans (catalog/span.py): host networking, the RDMA
devices, the link's interface for NCCL, Gloo, UCX and Ray. A worker has no port of its own and
no readiness probe (it never listens; the head answering is the model's readiness).

Readiness (BRIEF §3): the unit becomes active only once the engine answers its health path, via
an `ExecStartPost=` probe polling every few tens of milliseconds — Podman's own health timer
(what Quadlet's `Notify=healthy` waits on) ticks at about a second, and it needs Podman ≥ 5, while
DGX OS 7 ships 4.9. So a finished start job means "ready", for containers and processes alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from itertools import combinations
from typing import Literal

import jinja2

from sparkctl.apikeys.engine import ENV_VAR as ENGINE_KEY_VAR
from sparkctl.catalog import Catalog, Model, span
from sparkctl.catalog.flags import engine_flags
from sparkctl.paths import TEMPLATES_DIR
from sparkctl.quantities import format_size, systemd_seconds
from sparkctl.settings import Settings
from sparkctl.units import quoting
from sparkctl.units.names import (
    ENGINE_NETWORK,
    ENGINE_NETWORK_NAME,
    container_name,
    service_name,
    socket_name,
)

Destination = Literal["quadlet", "unit"]

# Where the model's own compile cache appears inside its container.
CONTAINER_COMPILE_CACHE = "/root/.cache/sparkctl-compile"
# A process unit's compile cache: systemd's CacheDirectory= (under /var/cache), made and owned
# for the unit's user, dynamic ones included.
PROCESS_CACHE_DIRECTORY = "sparkctl/compile"
CONTAINER_CHAT_TEMPLATES = "/etc/sparkctl/chat-templates"
PROBE_INTERVAL = "10ms"
HEALTH_INTERVAL = "30s"
# seconds a container unit's stop may take beyond the engine's own stop_timeout: podman's kill
# and the container's removal
CONTAINER_STOP_MARGIN = 30
HEADER = "# Rendered by sparkctl from {source}: edit the catalog and run `sparkctl render`, not this file."


@dataclass(frozen=True, slots=True)
class UnitFile:
    destination: Destination  # quadlet dir or unit dir
    name: str
    text: str


def conflicting_pairs(catalog: Catalog, settings: Settings) -> list[tuple[str, str]]:
    """Pairs of enabled models that must never be active at once (BRIEF §2.1): any pair with an
    exclusive model, or whose two memory fractions exceed the budget. Sorted; a < b."""
    budget = settings.scheduler.memory_budget
    pairs = []
    for a, b in combinations(sorted(m.id for m in catalog.enabled), 2):
        sa, sb = catalog.models[a].spec, catalog.models[b].spec
        if (
            sa.serve.gpu == "exclusive"
            or sb.serve.gpu == "exclusive"
            or sa.engine.gpu_memory_utilization + sb.engine.gpu_memory_utilization > budget + 1e-9
        ):
            pairs.append((a, b))
    return pairs


def render(catalog: Catalog, settings: Settings) -> list[UnitFile]:
    parts = {m.id: _part(m, settings) for m in catalog.enabled}
    # A spanning model that runs on other nodes only has no unit here.
    here = [m for m in catalog.enabled if m.spec.serve.nodes == 1 or parts[m.id] is not None]
    conflicts: dict[str, list[str]] = {m.id: [] for m in here}
    for a, b in conflicting_pairs(catalog, settings):
        if a in conflicts and b in conflicts:
            conflicts[a].append(b)
            conflicts[b].append(a)
    files = []
    if any(_network(m, settings, parts[m.id]) == "bridge" for m in here):
        files.append(_network_unit())
    for model in here:
        part = parts[model.id]
        files.append(_engine_unit(model, settings, conflicts[model.id], part))
        # A worker takes no requests: only the head has the model's own port.
        if model.direct_port is not None and (part is None or part.role == "head"):
            files.append(_socket_unit(model, settings))
    return files


def _part(model: Model, settings: Settings) -> span.Part | None:
    """This node's part of a spanning model (None: one node, or not this one). The catalog's
    cross-checks made sure the cluster can run it, so a SpanError here is a bug, raised."""
    if model.spec.serve.nodes == 1:
        return None
    return span.part(model.spec, settings.cluster)


def _network(model: Model, settings: Settings, part: span.Part | None) -> str | None:
    """A container's network; every part of a spanning model is on the host's (NCCL, Gloo and
    Ray reach the other Sparks over the link, on ports they choose)."""
    if model.spec.engine.runtime != "container":
        return None
    return "host" if part is not None else settings.runtime.container_network


@cache
def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _unit_section(model: Model, others: list[str], part: span.Part | None) -> dict[str, object]:
    description = f"sparkctl model {model.id}: {model.spec.description}"
    if part is not None:
        description += (
            f" (head, rank 0 of {len(part.nodes)})"
            if part.role == "head"
            else f" (worker, rank {part.rank} of {len(part.nodes)}; head on {part.nodes[0]})"
        )
    # Conflicts= makes systemd itself refuse co-residence, even for a manual `systemctl start`.
    # An ordering in one direction (the lower id is Before= the higher) makes systemd run the stop
    # job before the start job when one replaces the other, whichever is started.
    return {
        "description": quoting.plain(description),
        "documentation": f"https://huggingface.co/{model.spec.source.hf_repo}"
        if "/" in model.spec.source.hf_repo and not model.spec.source.hf_repo.startswith("/")
        else None,
        "conflicts": [service_name(o) for o in others],
        "before": [service_name(o) for o in others if o > model.id],
    }


def _listen(model: Model, settings: Settings, part: span.Part | None) -> tuple[str, int]:
    """Where the engine listens, as seen from inside its container or process."""
    if _network(model, settings, part) == "bridge":
        return "0.0.0.0", model.spec.engine.port
    return "127.0.0.1", model.host_port


def _argv(model: Model, settings: Settings, chat_template: str | None, part: span.Part | None) -> list[str]:
    spec, engine = model.spec, model.spec.engine
    if part is not None and part.multinode == "ray" and part.role == "worker":
        return []  # a Ray worker runs no vLLM of its own (the head's drives it): Ray alone
    host, port = _listen(model, settings, part)
    command = engine.command
    if command is None:
        command = _default_command(model)
    argv = [
        *command,
        *engine_flags(
            engine,
            model_id=spec.id,
            hf_repo=spec.source.hf_repo,
            revision=spec.source.revision,
            host=host,
            port=port,
            chat_template=chat_template,
        ),
    ]
    return argv if part is None else [*argv, *span.vllm_flags(spec, part)]


def _default_command(model: Model) -> list[str]:
    engine = model.spec.engine
    if engine.runtime == "container":
        return []  # the image's entrypoint
    return {"vllm": ["vllm", "serve"], "sglang": ["python3", "-m", "sglang.launch_server"]}[engine.kind]


def _environment(
    model: Model, *, hf_home: str, compile_cache: str, quadlet: bool, part: span.Part | None
) -> list[str]:
    env = {
        "HF_HOME": hf_home,
        # The HF cache is read-only to engines (`sparkctl pull` fills it): never a download, and
        # code a `--trust-remote-code` model brings is copied into its own cache, not the shared one.
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": f"{compile_cache}/hf-modules",
        # Compilation caches survive restarts: minutes off every cold start after the first. One per
        # model, so a model cannot plant compiled code another loads.
        "VLLM_CACHE_ROOT": f"{compile_cache}/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{compile_cache}/torchinductor",
        "TRITON_CACHE_DIR": f"{compile_cache}/triton",
        "FLASHINFER_WORKSPACE_BASE": f"{compile_cache}/flashinfer",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if part is not None:
        env.update(span.environment(part))
    env.update(model.spec.engine.env)
    line = quoting.quadlet_environment if quadlet else quoting.environment
    return [line(k, v) for k, v in env.items()]


def _preflight(model: Model, settings: Settings) -> str:
    """The start-time check that weights and image are here (a start never downloads)."""
    spec = model.spec
    argv = [
        str(settings.runtime.sparkctl),
        "preflight",
        "--model",
        spec.id,
        "--hf-cache",
        str(settings.runtime.hf_cache),
        "--repo",
        spec.source.hf_repo,
        "--revision",
        spec.source.revision,
    ]
    if spec.engine.image:
        argv += ["--image", spec.engine.image]
    for repo in model.extra_repos:
        argv += ["--require", repo]
    return quoting.command_line(argv)


def _probe(model: Model, settings: Settings) -> str:
    url = f"http://127.0.0.1:{model.host_port}{model.spec.engine.health_path}"
    return quoting.command_line([str(settings.runtime.sparkctl), "probe", "--interval", PROBE_INTERVAL, url])


def _engine_unit(model: Model, settings: Settings, others: list[str], part: span.Part | None) -> UnitFile:
    """The model's own unit: a plain `.service` for a process, a Quadlet `.container` otherwise."""
    worker = part is not None and part.role == "worker"
    common: dict[str, object] = {
        "header": HEADER.format(source=f"{model.spec.id}.toml"),
        "unit": _unit_section(model, others, part),
        "start_timeout": systemd_seconds(model.spec.serve.start_timeout),
        "stop_timeout": systemd_seconds(_stop_seconds(model)),
        # A worker never listens: the start job ends once it runs (it joins the head by itself).
        "probe": None if worker else _probe(model, settings),
        # The workers start with the head, which preloads or not.
        "preload": model.spec.serve.preload and not worker,
        "engine_env": quoting.plain(str(settings.runtime.engine_env)),
    }
    if model.spec.engine.runtime == "process":
        return _process_unit(model, settings, common, part)
    return _container_unit(model, settings, common, part)


def _process_unit(
    model: Model, settings: Settings, common: dict[str, object], part: span.Part | None
) -> UnitFile:
    template_file = model.chat_template_file
    argv = _argv(model, settings, str(template_file) if template_file else None, part)
    if part is not None and part.multinode == "ray":
        argv = [*span.ray_wrapper(part), *argv]  # Ray first; the head's then execs vLLM
    # A user's manager cannot set up mount namespaces without unprivileged user namespaces, nor
    # switch users; its cache is under the configured path, made by the unit itself.
    user_manager = settings.systemd.bus == "user"
    if user_manager:
        cache_dir = f"{settings.runtime.compile_cache}/{model.id}"
    else:
        cache_dir = f"/var/cache/{PROCESS_CACHE_DIRECTORY}/{model.id}"
    text = (
        templates()
        .get_template("model.service.j2")
        .render(
            **common,
            exec_start=quoting.command_line(argv),
            environment=_environment(
                model,
                hf_home=str(settings.runtime.hf_cache),
                compile_cache=cache_dir,
                quadlet=False,
                part=part,
            ),
            # A single-node engine talks to loopback only; a part of a spanning model also to the
            # other parts, on the link.
            ip_allow=["localhost", *(part.addresses if part is not None else ())],
            limits=[
                f"Limit{name.upper()}={'infinity' if v < 0 else v}"
                for name, v in sorted(model.spec.engine.ulimits.items())
            ],
            user_manager=user_manager,
            user=settings.runtime.process_user,
            cache_directory=f"{PROCESS_CACHE_DIRECTORY}/{model.id}",
            make_cache=quoting.command_line(["/bin/mkdir", "-p", cache_dir]),
            hf_cache=quoting.plain(str(settings.runtime.hf_cache)),
        )
    )
    return UnitFile("unit", service_name(model.id), text)


def _container_unit(
    model: Model, settings: Settings, common: dict[str, object], part: span.Part | None
) -> UnitFile:
    engine = model.spec.engine
    in_container_template = (
        f"{CONTAINER_CHAT_TEMPLATES}/{engine.chat_template}" if engine.chat_template else None
    )
    network = _network(model, settings, part)
    argv = _argv(model, settings, in_container_template, part)
    entrypoint = engine.entrypoint
    if part is not None and part.multinode == "ray":
        # Ray starts first, as the container's entrypoint: Exec= is vLLM's argv (the head's) or
        # nothing (a worker's). The catalog checked that no entrypoint of its own is lost.
        entrypoint = span.ray_wrapper(part)
    devices = ["nvidia.com/gpu=all", *engine.devices]
    if part is not None and span.RDMA_DEVICES not in devices:
        devices.append(span.RDMA_DEVICES)
    text = (
        templates()
        .get_template("model.container.j2")
        .render(
            **common,
            id=model.id,
            image=engine.image,
            exec=quoting.command_line(argv),
            network=network,
            engine_network=ENGINE_NETWORK,
            publish=f"127.0.0.1:{model.host_port}:{engine.port}" if network == "bridge" else None,
            devices=devices,
            capabilities=engine.capabilities,
            make_cache=quoting.command_line(
                ["/bin/mkdir", "-p", "-m", "0700", _compile_cache(model, settings)]
            ),
            volumes=_volumes(model, settings, in_container_template),
            environment=_environment(
                model,
                hf_home=str(settings.runtime.container_hf_home),
                compile_cache=CONTAINER_COMPILE_CACHE,
                quadlet=True,
                part=part,
            ),
            ulimits=[f"{name}={v}:{v}" for name, v in sorted(engine.ulimits.items())],
            podman_args=_podman_args(model, entrypoint),
            # Podman stops the container itself (ExecStop=): each step of the unit's stop is
            # allowed that long and the container's removal, before systemd's own kill.
            container_stop_timeout=systemd_seconds(_stop_seconds(model) + CONTAINER_STOP_MARGIN),
            # A worker has nothing to ask; its health is the head's (which loses a worker).
            health_cmd=None
            if part is not None and part.role == "worker"
            else _health_cmd(model, settings, part),
            health_interval=HEALTH_INTERVAL,
            preflight=_preflight(model, settings),
        )
    )
    return UnitFile("quadlet", container_name(model.id), text)


def _volumes(model: Model, settings: Settings, in_container_template: str | None) -> list[str]:
    """The container's Volume= lines: the shared caches, the chat template, the catalog's own."""
    template_file = model.chat_template_file
    volumes = [
        f"{settings.runtime.hf_cache}:{settings.runtime.container_hf_home}:ro",
        f"{_compile_cache(model, settings)}:{CONTAINER_COMPILE_CACHE}",
    ]
    if template_file is not None and in_container_template:
        volumes.append(f"{template_file}:{in_container_template}:ro")
    volumes += [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in model.spec.engine.volumes]
    # Quadlet takes each Volume= line whole (no word splitting); the catalog's paths carry no
    # spaces or quotes, so only specifiers need escaping.
    return [quoting.plain(v) for v in volumes]


def _compile_cache(model: Model, settings: Settings) -> str:
    return f"{settings.runtime.compile_cache}/{model.id}"


def _network_unit() -> UnitFile:
    """The engines' own Podman network: engines reach neither the containers on Podman's default
    bridge nor those of other networks (isolate=true), and only their published loopback ports
    are reachable from the host. Rendered while container units use it (runtime.container_network
    "bridge")."""
    text = (
        templates()
        .get_template("sparkctl.network.j2")
        .render(header=HEADER.format(source="the settings"), name=ENGINE_NETWORK_NAME)
    )
    return UnitFile("quadlet", ENGINE_NETWORK, text)


def _stop_seconds(model: Model) -> int:
    """serve.stop_timeout in whole seconds, as podman counts them (rounded up: never shorter)."""
    return math.ceil(model.spec.serve.stop_timeout)


def _podman_args(model: Model, entrypoint: list[str]) -> list[str]:
    # Podman 4.9's Quadlet lacks Entrypoint= and ShmSize=: PodmanArgs= works on 4.9 and 5.x.
    engine = model.spec.engine
    # The engine key, from the unit's EnvironmentFile= into the container (none set: none passed).
    args = [
        f"--shm-size={format_size(engine.shm_size)}",
        f"--env={ENGINE_KEY_VAR}",
        # how long podman lets the engine exit after SIGTERM before it kills it (Quadlet's
        # StopTimeout= is Podman 5.0's)
        f"--stop-timeout={_stop_seconds(model)}",
    ]
    if entrypoint:
        args.append("--entrypoint=" + json.dumps(entrypoint, separators=(",", ":")))
    return [quoting.quote_word(a) for a in args]


def _health_cmd(model: Model, settings: Settings, part: span.Part | None) -> str:
    """Podman's HealthCmd=, run through `sh -c` inside the image: python3 is in every vLLM and
    SGLang image, curl not always. Catches an engine that hangs after it was ready. (No double
    quotes: Quadlet mangles them in HealthCmd=.)"""
    url = f"http://127.0.0.1:{_listen(model, settings, part)[1]}{model.spec.engine.health_path}"
    return quoting.plain(
        "python3 -c 'import sys,urllib.request as u; u.urlopen(sys.argv[1],timeout=10)' " + url
    )


def _socket_unit(model: Model, settings: Settings) -> UnitFile:
    assert model.direct_port is not None
    host = settings.gateway.direct_host
    text = (
        templates()
        .get_template("model.socket.j2")
        .render(
            header=HEADER.format(source=f"{model.id}.toml"),
            id=model.id,
            listen=f"[{host}]:{model.direct_port}" if ":" in host else f"{host}:{model.direct_port}",
        )
    )
    return UnitFile("unit", socket_name(model.id), text)
