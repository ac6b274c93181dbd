"""Checks across catalog files, and the stable automatic port assignment.

Per-file rules live in the schema; here are the rules that need the whole catalog: names that
collide, ports that clash, and memory fractions that can never fit the budget.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from sparkctl.catalog import span
from sparkctl.catalog.spec import ModelSpec
from sparkctl.errors import Issue
from sparkctl.settings import Settings, split_host_port

Specs = dict[str, tuple[ModelSpec, Path]]


def cross_check(specs: Specs, settings: Settings) -> list[Issue]:
    return (
        _names(specs)
        + _budget(specs, settings)
        + _explicit_ports(specs, settings)
        + _spanning(specs, settings)
    )


def _spanning(specs: Specs, settings: Settings) -> list[Issue]:
    """An enabled model that spans nodes (serve.nodes > 1) against the configured cluster (#15):
    its owner known, enough nodes, the link's interface and addresses (catalog/span.py says
    what it lacks). A disabled one is not checked against this cluster: a shipped catalog's
    example is written for anyone's."""
    issues = []
    for spec, path in specs.values():
        if spec.serve.nodes == 1 or not spec.enabled:
            continue
        try:
            span.part(spec, settings.cluster)
        except span.SpanError as e:
            issues.append(Issue(str(path), "serve.nodes", str(e)))
    return issues


def _names(specs: Specs) -> list[Issue]:
    """An alias must name one model only, and never shadow another model's id."""
    issues = []
    owner: dict[str, str] = {}
    for mid, (spec, path) in specs.items():
        for i, alias in enumerate(spec.aliases):
            if alias in specs:
                issues.append(
                    Issue(
                        str(path),
                        f"aliases[{i}]",
                        f"{alias!r} is the id of another model ({specs[alias][1]})",
                    )
                )
            elif alias in owner:
                issues.append(
                    Issue(
                        str(path),
                        f"aliases[{i}]",
                        f"{alias!r} is also an alias of {owner[alias]!r} ({specs[owner[alias]][1]})",
                    )
                )
            else:
                owner[alias] = mid
    return issues


def _budget(specs: Specs, settings: Settings) -> list[Issue]:
    budget = settings.scheduler.memory_budget
    issues = []
    for spec, path in specs.values():
        if spec.enabled and spec.engine.gpu_memory_utilization > budget:
            issues.append(
                Issue(
                    str(path),
                    "engine.gpu_memory_utilization",
                    f"{spec.engine.gpu_memory_utilization} can never fit the memory budget "
                    f"(scheduler.memory_budget = {budget})",
                )
            )
    pinned = [(spec, path) for spec, path in specs.values() if spec.enabled and spec.serve.pinned]
    total = sum(spec.engine.gpu_memory_utilization for spec, _ in pinned)
    if total > budget + 1e-9:
        names = ", ".join(f"{s.id} ({s.engine.gpu_memory_utilization})" for s, _ in pinned)
        for _spec, path in pinned:
            issues.append(
                Issue(
                    str(path),
                    "serve.pinned",
                    f"the pinned models together need {total:.2f} of memory, "
                    f"over the budget of {budget}: {names}",
                )
            )
    return issues


def _explicit_ports(specs: Specs, settings: Settings) -> list[Issue]:
    """Explicit host and direct ports must be distinct from each other and from the gateway's."""
    issues = []
    used: dict[int, str] = {}
    for listen in settings.gateway.listen:
        used[split_host_port(listen)[1]] = f"gateway.listen ({listen})"
    for mid, (spec, path) in specs.items():
        if not spec.enabled:
            continue
        for field, port in _explicit(spec):
            if port in used:
                issues.append(Issue(str(path), field, f"port {port} is also used by {used[port]}"))
            else:
                used[port] = f"{mid} ({field})"
    return issues


def _explicit(spec: ModelSpec) -> list[tuple[str, int]]:
    out = []
    if spec.engine.host_port is not None:
        out.append(("engine.host_port", spec.engine.host_port))
    elif spec.engine.runtime == "process":
        out.append(("engine.port", spec.engine.port))
    if spec.serve.direct_port:
        out.append(("serve.direct_port", spec.serve.direct_port))
    return out


def assign_ports(specs: Specs, settings: Settings) -> tuple[dict[str, int], dict[str, int], list[Issue]]:
    """Host ports for containers without one, and direct ports for models without one.

    Each model hashes its id into the span above the base and takes the next free port from
    there, so a model keeps its port when others are added or removed (unless it loses a tie).
    """
    cat = settings.catalog
    taken = {split_host_port(a)[1] for a in settings.gateway.listen}
    host: dict[str, int] = {}
    direct: dict[str, int] = {}
    auto_host, auto_direct = [], []
    for mid, (spec, _) in specs.items():
        if not spec.enabled:
            continue
        explicit = dict(_explicit(spec))
        if "engine.host_port" in explicit or "engine.port" in explicit:
            host[mid] = explicit.get("engine.host_port", spec.engine.port)
        else:
            auto_host.append(mid)
        if spec.serve.direct_port is None:
            auto_direct.append(mid)
        elif spec.serve.direct_port:
            direct[mid] = spec.serve.direct_port
    taken |= set(host.values()) | set(direct.values())
    issues: list[Issue] = []
    for ids, base, out, what in (
        (auto_host, cat.port_base, host, "catalog.port_base"),
        (auto_direct, cat.direct_port_base, direct, "catalog.direct_port_base"),
    ):
        for mid in sorted(ids, key=lambda m: (_slot(m, cat.port_span), m)):
            port = _probe(base, _slot(mid, cat.port_span), cat.port_span, taken)
            if port is None:
                issues.append(
                    Issue(str(specs[mid][1]), "", f"no free port left in {what} .. +{cat.port_span}")
                )
                continue
            out[mid] = port
            taken.add(port)
    return host, direct, issues


def _slot(model_id: str, span: int) -> int:
    return zlib.crc32(model_id.encode()) % span


def _probe(base: int, slot: int, span: int, taken: set[int]) -> int | None:
    for i in range(span):
        port = base + (slot + i) % span
        if port not in taken and port < 65536:
            return port
    return None
