"""`python -m bench [--quick] [--out DIR] [--only SCENARIO …]`: run the benchmark suite.

Writes DIR/results.json (every raw measurement, medians, spreads, the machine's facts),
DIR/report.md (tables, each target met or missed) and DIR/*.png. Exits 1 if a scenario failed
(its error is in the report), 0 otherwise: a missed target is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import machine, plots, report, verdicts
from .loadgen import pin_self
from .profile import FULL, QUICK, Profile
from .scenarios import FAST, SLOW, Context, coldstart, detect, eta, gateway, held, relay, streaming
from .stack import ModelDef, Stack
from .targets import start_naive, start_nginx, start_vllm_router, vllm_router

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "gateway": gateway.run,
    "gateway_own_core": gateway.run_own_core,
    "streaming": streaming.run,
    "held": held.run,
    "cold_start": coldstart.run_cold,
    "swap": coldstart.run_swap,
    "eta": eta.run,
    "detect": detect.run,
    "relay": relay.run,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
FD_WANTED = 16384  # 1000 held streams: a client socket here, and two sockets in the daemon each


def models(prof: Profile) -> list[ModelDef]:
    lo = prof.load_time[0]
    return [
        # Both serve more connections than systemd's default 1024 fds: 512 streams, and every
        # front's idle keep-alive pool to the engine besides (the held streams: 1000).
        ModelDef(FAST, load_time=0.2, nofile=FD_WANTED),
        ModelDef(SLOW, load_time=0.2, tokens_per_second=1, nofile=FD_WANTED, max_model_len=8192),
        ModelDef("cold-proc", load_time=lo),
        ModelDef("cold-ctr", load_time=lo, runtime="container"),
        ModelDef("cold-poll", load_time=lo),
        ModelDef("swap-a", load_time=lo, exclusive=True, fraction=0.001),
        ModelDef("swap-b", load_time=lo, exclusive=True, fraction=0.001),
        *(ModelDef(m, load_time=lo, exclusive=True, fraction=0.001) for m in eta.MODELS),
        ModelDef(detect.MODEL, load_time=0.2, tokens_per_second=detect.TOKENS_PER_SECOND),
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, for CI (about a minute)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run only these scenarios")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: redraw the plots and rewrite report.md from OUT/results.json",
    )
    return p.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` tears its part down.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        _write(json.loads((args.out / "results.json").read_text()), args.out.resolve())
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    prof = QUICK if args.quick else FULL
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.png"), out / "results.json", out / "report.md"]:
        old.unlink(missing_ok=True)
    fd_limit = held.raise_fd_limit(FD_WANTED)
    plan = machine.CpuPlan.for_this_machine()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "schema": 1,
        "mode": prof.name,
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine.facts(plan),
        "profile": {
            k: v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}
            for k, v in vars(prof).items()
        },
        "fd_limit": list(fd_limit),
        "scenarios": {},
        "errors": {},
    }
    print(f"bench: {prof.name} run, {plan.describe()}; writing to {out}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="sparkctl-bench-"))
    work.chmod(0o755)  # nginx's worker (nobody) reads below it
    stack = Stack(f"bench{os.getpid()}", plan, models(prof))
    ctx = Context(stack=stack, plan=plan, profile=prof, work=work)
    wanted = [name for name in SCENARIOS if name in (args.only or SCENARIOS)]
    try:
        _run(ctx, wanted, results)
    except BaseException as e:  # even Ctrl-C: record it, tear down, write what we have
        results["errors"]["setup"] = "".join(traceback.format_exception(e)).strip()
        if not isinstance(e, Exception):
            print("bench: interrupted; tearing down", file=sys.stderr)
    finally:
        for front in ctx.fronts.values():
            try:
                front.stop()
            except Exception as e:
                print(f"bench: stopping {front.name}: {type(e).__name__}: {e}", file=sys.stderr)
        try:
            stack.close(logs=out / "logs")
        except Exception as e:
            results["errors"]["teardown"] = "".join(traceback.format_exception(e)).strip()
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["wall_seconds"] = round(time.monotonic() - t0, 1)
    _write(results, out)
    return 1 if results["errors"] else 0


def _write(results: dict[str, Any], out: Path) -> None:
    """Judge the targets, draw the plots, write results.json and report.md; say the verdicts."""
    results["verdicts"] = verdicts.evaluate(results["scenarios"])
    results["plots"] = plots.draw(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(report.render(results))
    for v in results["verdicts"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
        print(f"bench: {v['target']} {v['threshold']}: {v['measured_text']} — {state}", file=sys.stderr)
    print(f"bench: done in {results['wall_seconds']:.0f}s: {out / 'report.md'}", file=sys.stderr)


def _run(ctx: Context, wanted: list[str], results: dict[str, Any]) -> None:
    stack = ctx.stack
    t = time.monotonic()
    stack.up()
    print(f"bench: sandbox and sparkctl up in {time.monotonic() - t:.1f}s", file=sys.stderr)
    # From here on the load generator keeps to its core; the box's systemd was started before
    # this, so the engines it forks are free, and the benchmark pins them where they belong.
    pin_self(ctx.plan.loadgen)
    stack.complete(FAST)
    ctx.fronts["nginx"] = start_nginx(ctx.work, stack.engine_port(FAST), ctx.plan)
    ctx.fronts["naive-aiohttp"] = start_naive(ctx.work, stack.engine_port(FAST), ctx.plan)
    if vllm_router() is not None:
        ctx.fronts["vllm-router"] = start_vllm_router(ctx.work, stack.engine_port(FAST), ctx.plan)
    else:
        results["skipped"] = {"vllm-router": "not installed (pip install vllm-router)"}
    for name in wanted:
        print(f"bench: {name} …", file=sys.stderr)
        t = time.monotonic()
        try:
            results["scenarios"][name] = SCENARIOS[name](ctx)
            results["scenarios"][name]["seconds"] = round(time.monotonic() - t, 1)
        except Exception as e:
            results["errors"][name] = "".join(traceback.format_exception(e)).strip()
            print(f"bench: {name} failed: {e}", file=sys.stderr)
            if not stack.daemon or not stack.daemon.alive():
                raise RuntimeError("sparkctl serve died; the remaining scenarios cannot run") from e
        print(f"bench: {name} done in {time.monotonic() - t:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
