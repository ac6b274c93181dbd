"""Cold start and swap on the real sandboxed systemd, as BRIEF §7 defines the overhead: from the
request reaching the gateway to its first byte leaving it, minus the engine's own exec-to-ready
time, which the emulator prints (`exec_to_ready_ms`: its process's age, from /proc, when it starts
listening).

Measured from a client on loopback, over a connection opened before the clock starts, so each
figure also holds two loopback hops (tens of µs). The engine's load time is drawn at random per
run (the same draw for every variant of a run), so a poller's phase against the engine's
readiness is not fixed by the choice of one load time. Each run is split into steps on one clock
(CLOCK_MONOTONIC): the client's, systemd's unit timestamps and journal, and the engine's
`ready_unix` mapped onto it.

Two caveats on the engine's figure, both visible in the steps: /proc's start time is the *fork*
(systemd's child sets up the unit's sandboxing before execve), and it counts in clock ticks, so
it may read up to one tick (10 ms at 100 Hz) early. systemd's own ExecMainStartTimestamp is taken
by the manager after its fork returns, 5–20 ms later than the child exists; the overhead computed
from it ("via ExecMainStart") is the conservative reading, reported beside.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from sparkctl.units.names import service_name

from ..loadgen import Timed, http_request, timed_request
from ..stats import rotate, spread
from ..waiter import cold_request
from . import FAST, MESSAGES, SLOW, Context

VARIANTS = {
    "sparkctl (process unit)": "cold-proc",
    "sparkctl (container unit)": "cold-ctr",
    "1-second health poller": "cold-poll",
}
SWAP = ("swap-a", "swap-b")
SETTLE = 0.3  # quiet time before each timed request

FORKED = "request → engine process forked"
OWN = "engine's own exec→ready"
PROBE = "engine ready → unit active (readiness probe)"
ANSWER = "unit active → first byte"
POLLED = "engine ready → first byte"


def _body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4}, separators=(",", ":")).encode()


def _engine(ctx: Context, model: str, timed: Timed) -> tuple[float, float, float]:
    """(exec_to_ready ms, engine fork, engine ready) with the instants on the monotonic clock."""
    exec_ms, ready_unix = ctx.stack.ready_line(model, timed.sent_wall)
    ready = ready_unix - (timed.sent_wall - timed.sent)
    return exec_ms, ready - exec_ms / 1000, ready


def _cold_run(ctx: Context, model: str, timed: Timed, poller: bool) -> dict[str, Any]:
    exec_ms, fork, ready = _engine(ctx, model, timed)
    unit = ctx.stack.unit_times(model)
    ms = 1000.0
    ttfb = timed.ttfb * ms
    steps = {FORKED: (fork - timed.sent) * ms, OWN: exec_ms}
    if poller:
        steps[POLLED] = (timed.first_byte - ready) * ms
    else:
        steps[PROBE] = (unit["ActiveEnter"] - ready) * ms
        steps[ANSWER] = (timed.first_byte - unit["ActiveEnter"]) * ms
    return {
        "status": timed.status,
        "ttfb_ms": ttfb,
        "exec_to_ready_ms": exec_ms,
        "overhead_ms": ttfb - exec_ms,
        "overhead_via_execmainstart_ms": ttfb - (ready - unit["ExecMainStart"]) * ms,
        "systemd_start_job_after_request_ms": (unit["InactiveExit"] - timed.sent) * ms,
        "engine_fork_after_start_job_ms": (fork - unit["InactiveExit"]) * ms,
        "steps_ms": steps,
    }


def run_cold(ctx: Context) -> dict[str, Any]:
    stack, prof = ctx.stack, ctx.profile
    rng = random.Random(20261128)
    runs: list[dict[str, Any]] = []
    names = list(VARIANTS)
    for model in VARIANTS.values():
        if stack.unit_active(model) != "inactive":
            stack.stop_model(model)
    # Run -1 warms each variant (page cache, Podman's first container) and is not counted.
    for i in range(-1, prof.cold_runs):
        load = rng.uniform(*prof.load_time)
        for name in rotate(names, i):
            model = VARIANTS[name]
            poller = model == "cold-poll"
            stack.set_load_time(model, load)
            time.sleep(SETTLE)
            polls = 0
            if poller:
                request = http_request(stack.engine_port(model), "/v1/chat/completions", _body(model), {})
                timed, polls = cold_request(stack, model, request)
            else:
                request = http_request(stack.port, "/v1/chat/completions", _body(model), stack.auth)
                timed = timed_request(stack.port, request)
            if timed.status != 200:
                raise RuntimeError(f"{name}: cold request answered HTTP {timed.status}: {timed.body[:300]!r}")
            run = {
                "run": i,
                "variant": name,
                "model": model,
                "load_time_s": load,
                **_cold_run(ctx, model, timed, poller),
            }
            if poller:
                run["polls"] = polls
            if model == "cold-ctr":
                # Podman's part (start job → the engine's process in the container), reported
                # beside the overhead and not counted in it. ExecMainStart means conmon here.
                run["container_start_ms"] = run["engine_fork_after_start_job_ms"]
                run["overhead_incl_container_ms"] = run["overhead_ms"]
                run["overhead_ms"] -= run["container_start_ms"]
                run["overhead_via_execmainstart_ms"] = None
            if i >= 0:
                runs.append(run)
            if poller:
                stack.box.systemctl("stop", service_name(model))  # type: ignore[union-attr]
            else:
                stack.stop_model(model)
    return {
        "exec_to_ready_source": "the emulator's printed exec_to_ready_ms (its process's age from /proc "
        "when it "
        "starts listening); overhead_via_execmainstart_ms uses ready_unix − ExecMainStartTimestamp instead",
        "load_time_range_s": list(prof.load_time),
        "runs": runs,
        "summary": {name: _summary([r for r in runs if r["variant"] == name]) for name in names},
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        "overhead_ms",
        "overhead_via_execmainstart_ms",
        "ttfb_ms",
        "exec_to_ready_ms",
        "systemd_start_job_after_request_ms",
        "container_start_ms",
        "overhead_incl_container_ms",
        "memory_gate_interval_ms",
        "overhead_excl_old_engine_stop_ms",
    ]
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = spread(values)
    steps = list(dict.fromkeys(k for r in runs for k in r["steps_ms"]))
    out["steps_ms"] = {k: spread([r["steps_ms"][k] for r in runs if k in r["steps_ms"]]) for k in steps}
    return out


def _stop_interval(ctx: Context, model: str, since_wall: float) -> tuple[float, float]:
    """When systemd began and ended stopping `model` (its journal's "Stopping"/"Stopped" lines)."""
    deadline = time.monotonic() + 5
    while True:
        log = ctx.stack.unit_log(model, since_wall)
        began = [t for t, msg in log if msg.startswith("Stopping ")]
        ended = [t for t, msg in log if msg.startswith("Stopped ")]
        if began and ended:
            return began[-1], ended[-1]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stop of {model} in its journal since {since_wall:.3f}")
        time.sleep(0.05)


def run_swap(ctx: Context) -> dict[str, Any]:
    """A→B between two exclusive models, then B→A, and so on: B's request arrives while A is ready
    and idle; sparkctl drains A (nothing in flight), stops it, passes the memory gate, starts B."""
    stack, prof = ctx.stack, ctx.profile
    rng = random.Random(20261129)
    a, b = SWAP
    runs: list[dict[str, Any]] = []
    # A is exclusive: starting it drains and stops the shared models first. Leases left on them
    # hold that drain until drain_timeout, which is why they are counted here.
    leaked = {m: stack.in_flight(m) for m in (FAST, SLOW)}
    t0 = time.monotonic()
    stack.complete(a)
    setup_s = time.monotonic() - t0
    ms = 1000.0
    try:
        for i in range(prof.swap_runs):
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            load = rng.uniform(*prof.load_time)
            stack.set_load_time(dst, load)
            time.sleep(SETTLE)
            request = http_request(stack.port, "/v1/chat/completions", _body(dst), stack.auth)
            timed = timed_request(stack.port, request)
            if timed.status != 200:
                raise RuntimeError(f"swap {src}→{dst} answered HTTP {timed.status}: {timed.body[:300]!r}")
            exec_ms, fork, ready = _engine(ctx, dst, timed)
            stopping, stopped = _stop_interval(ctx, src, timed.sent_wall)
            active = stack.unit_times(dst)["ActiveEnter"]
            ttfb = timed.ttfb * ms
            steps = {
                "request → old engine's stop begins": (stopping - timed.sent) * ms,
                "old engine stopping (its own shutdown)": (stopped - stopping) * ms,
                "old stopped → new engine forked (memory gate, supervisor, systemd)": (fork - stopped) * ms,
                OWN: exec_ms,
                PROBE: (active - ready) * ms,
                ANSWER: (timed.first_byte - active) * ms,
            }
            runs.append(
                {
                    "run": i,
                    "from": src,
                    "to": dst,
                    "load_time_s": load,
                    "status": timed.status,
                    "ttfb_ms": ttfb,
                    "exec_to_ready_ms": exec_ms,
                    "overhead_ms": ttfb - exec_ms,
                    "memory_gate_interval_ms": (fork - stopped) * ms,
                    "overhead_excl_old_engine_stop_ms": ttfb - exec_ms - (stopped - stopping) * ms,
                    "steps_ms": steps,
                }
            )
    finally:
        for model in SWAP:
            if stack.unit_active(model) != "inactive":
                stack.stop_model(model)
    return {
        "models": list(SWAP),
        "leases_before_first_swap": leaked,
        "first_swap_seconds": setup_s,
        "fractions": "0.001 of memory each, exclusive: the memory gate's first MemAvailable reading passes",
        "load_time_range_s": list(prof.load_time),
        "runs": runs,
        "summary": _summary(runs),
    }
