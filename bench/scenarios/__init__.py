"""The scenarios: each a `run(ctx) -> dict` of raw measurements and their summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..machine import CpuPlan
from ..profile import Profile
from ..stack import Stack
from ..targets import Front

# Every request body is ~200 bytes (a system and a user message), as in the anchor figures.
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "Write one short sentence about the weather in the mountains today."},
]
FAST = "bench-fast"  # tokens as fast as possible: the front-end's overhead is all there is
SLOW = "bench-slow"  # one token per second: for streams held open
FRONTS = ("nginx", "naive-aiohttp", "vllm-router")  # beside direct and sparkctl, where each runs


@dataclass
class Context:
    stack: Stack
    plan: CpuPlan
    profile: Profile
    work: Path
    fronts: dict[str, Front] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Where a load generator sends its requests, and whose CPU that costs."""

    name: str
    port: int
    proxy_pids: tuple[int, ...]  # the front's processes (none for direct)


def targets(ctx: Context, engine_port: int) -> list[Target]:
    out = [
        Target("direct", engine_port, ()),
        Target("sparkctl", ctx.stack.port, tuple(ctx.stack.daemon_pids())),
    ]
    for name in FRONTS:
        if (front := ctx.fronts.get(name)) is not None:
            out.append(Target(name, front.port, tuple(front.pids())))
    return out
