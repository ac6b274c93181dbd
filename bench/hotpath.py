"""`python -m bench.hotpath`: where sparkctl's daemon spends its CPU per proxied request.

Boots the benchmark's stack (its own sandboxed systemd, the fast emulated engine), drives
non-streaming requests through sparkctl with wrk (or streams, `--stream`) and samples the daemon
with py-spy meanwhile. Prints the share of samples in each of sparkctl's own functions and in the
libraries it calls (inclusive, by the frame nearest the leaf that belongs to each), so that the
report can say where each remaining microsecond goes. py-spy is not a dependency of sparkctl:
`pip install py-spy` into the venv first.

    python -m bench.hotpath [--seconds 10] [--clients 16] [--raw FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .loadgen import pin_self, run_wrk, wrk_script
from .machine import CpuPlan
from .procs import cpu_seconds
from .scenarios import FAST, MESSAGES
from .stack import ModelDef, Stack


def parse(raw: Path, top: int) -> str:
    """py-spy's raw (collapsed) output as two tables: inclusive shares by module, and by function."""
    by_module: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen_mod: set[str] = set()
        seen_fn: set[str] = set()
        for frame in stack.split(";"):
            # "function (path/to/module.py:line)"
            fn, _, where = frame.partition(" (")
            path = where.rsplit(":", 1)[0]
            module = _module(path)
            if module not in seen_mod:
                seen_mod.add(module)
                by_module[module] += count
            key = f"{module}:{fn}"
            if key not in seen_fn:
                seen_fn.add(key)
                by_function[key] += count
    out = [f"{total} samples", "", "inclusive share by module:"]
    out += [f"  {100 * n / total:5.1f}%  {m}" for m, n in by_module.most_common(top)]
    out += ["", "inclusive share by function:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in by_function.most_common(top * 2)]
    return "\n".join(out)


def _module(path: str) -> str:
    for marker in ("site-packages/", "/sparkctl/", "/lib/python3"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            if marker == "/sparkctl/":
                rest = "sparkctl/" + rest
            elif marker == "/lib/python3":
                rest = "stdlib/" + rest.split("/", 1)[-1]
            return rest.removesuffix(".py")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    plan = CpuPlan.for_this_machine()
    stack = Stack(f"hotpath{__import__('os').getpid()}", plan, [ModelDef(FAST, load_time=0.2)])
    work = Path(tempfile.mkdtemp(prefix="sparkctl-hotpath-"))
    raw = args.raw or work / "raw.txt"
    try:
        stack.up()
        pin_self(plan.loadgen)
        stack.complete(FAST)
        stack.pin_engine(FAST)
        body = json.dumps({"model": FAST, "messages": MESSAGES, "max_tokens": 16}).encode()
        script = wrk_script(work, body, stack.auth)
        url = f"{stack.url}/v1/chat/completions"
        run_wrk(url, script, args.clients, 1, plan.loadgen)  # warm
        pid = stack.daemon_pids()[0]
        spy_argv = [pyspy, "record", "-p", str(pid), "-r", str(args.rate), "-d", str(args.seconds)]
        spy = subprocess.Popen(
            [*spy_argv, "-f", "raw", "-o", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu0 = cpu_seconds([pid])
        res = run_wrk(url, script, args.clients, args.seconds, plan.loadgen)
        cpu_us = (cpu_seconds([pid]) - cpu0) / max(res.requests, 1) * 1e6
        spy.wait(timeout=args.seconds + 60)
        print(f"{args.clients} clients: {res.rps:.0f} req/s, daemon {cpu_us:.0f} µs CPU per request")
        print(parse(raw, args.top))
    finally:
        stack.close()
        if args.raw is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
