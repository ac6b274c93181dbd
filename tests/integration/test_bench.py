"""The benchmark suite runs end to end in its short mode, so it cannot rot.

`python -m bench --quick` boots a sandbox of its own (named `bench<pid>`, apart from the test
session's), runs every scenario with small counts and tears everything down. Nothing here looks
at a timing: the report states them. This checks that the run completes, that its files are
there and well-formed, and that it leaves nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from matplotlib import image

from bench.targets import vllm_router
from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox.box import Box

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {
    "gateway",
    "gateway_own_core",
    "streaming",
    "held",
    "cold_start",
    "swap",
    "eta",
    "detect",
    "relay",
}
# vllm-router where scripts/setup could install its wheel (the benchmark runs without it)
TARGETS = {"direct", "sparkctl", "nginx", "naive-aiohttp"} | ({"vllm-router"} if vllm_router() else set())
PLOTS = {
    "gateway_latency.png",
    "gateway_throughput.png",
    "gateway_cpu.png",
    "streaming.png",
    "held_rss.png",
    "coldstart.png",
    "gateway_layouts.png",
}


def _leftovers() -> list[str]:
    """Processes the benchmark would have left: its nginx, its naive proxy, its daemon."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(
            mark in cmdline
            for mark in ("sparkctl-bench-", "bench.naive_proxy", "sparkctl-sandbox/bench", "vllm::router")
        ):
            found.append(f"{d.name}: {cmdline}")
    return found


def test_quick_benchmark_writes_results_report_and_plots(box: Box, tmp_path: Path) -> None:
    # `box` makes this test skip (or fail under CI=true) where no sandbox can boot, like every
    # integration test; the benchmark itself boots and removes a box of its own.
    boxes_before = set(sandbox.boxes())
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]

    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "quick" and results["errors"] == {}
    assert set(results["scenarios"]) == SCENARIOS
    machine = results["machine"]
    for fact in ("cpu_model", "cores_usable", "kernel", "python", "packages", "pinning_description"):
        assert machine[fact], fact
    assert machine["packages"]["sparkctl"] and machine["packages"]["aiohttp"]

    gateway = results["scenarios"]["gateway"]
    assert {(r["target"], r["clients"]) for r in gateway["summary"]} == {
        (t, c) for t in TARGETS for c in (1, 16, 64)
    }
    assert all(r["requests"] > 0 for r in gateway["raw"])
    streaming = results["scenarios"]["streaming"]
    assert {(r["target"], r["streams_concurrent"]) for r in streaming["summary"]} == {
        (t, c) for t in TARGETS for c in (1, 64, 512)
    }
    assert all(r["streams"] > 0 and r["chunks"] > 0 for r in streaming["raw"])
    held = results["scenarios"]["held"]
    assert held["streams_alive_at_end"] == held["connections"] > 0
    cold = results["scenarios"]["cold_start"]
    assert {r["variant"] for r in cold["runs"]} == set(cold["summary"]) and len(cold["summary"]) == 3
    assert all(r["status"] == 200 for r in cold["runs"] + results["scenarios"]["swap"]["runs"])
    eta = results["scenarios"]["eta"]
    assert {r["run"] for r in eta["runs"]} == set(range(6))  # a round may hold a second request
    assert {r["kind"] for r in eta["runs"]} <= {"cold", "swap", "behind"}
    assert eta["summary"]["guess"]["n"] + eta["summary"]["learned"]["n"] == len(eta["runs"])

    own = results["scenarios"]["gateway_own_core"]
    assert {(r["target"], r["clients"]) for r in own["summary"]} == {
        (t, c) for t in TARGETS for c in (1, 16, 64)
    }
    assert "alone on CPU" in own["layout"] or machine["cores_usable"] < 2
    detect = results["scenarios"]["detect"]
    assert len(detect["engine_death"]) == len(detect["client_gone"]) == 2
    # every killed engine ended its client's stream with an error event, every run was timed
    assert detect["summary"]["engine_death_error_events"] == 2
    assert detect["leases_left"] == 0

    # The relay to a peer node (#15): a second daemon relays every request for the model.
    relay = results["scenarios"]["relay"]
    assert {(r["target"], r["clients"]) for r in relay["summary"]} == {
        (t, c) for t in ("direct", "sparkctl", "relay") for c in (1, 16)
    }
    assert all(r["requests"] > 0 for r in relay["raw"])
    assert all(r["errors"] == 0 for r in relay["summary"]), relay["summary"]
    assert relay["leases_left"] == 0

    verdicts = results["verdicts"]
    assert len(verdicts) == 11
    assert all(v["met"] in (True, False) and v["measured"] is not None for v in verdicts), verdicts

    report = (out / "report.md").read_text()
    for heading in (
        "## Targets",
        "## Checks",
        "## Gateway overhead",
        "## Streaming",
        "## Streams held open",
        "## Cold start",
        "## ETA against the real wait",
        "## Swap",
        "## Gateway overhead with the front on a core of its own",
        "## Detection: a dead engine, a client gone",
        "## Relay to a peer node",
        "## Machine",
    ):
        assert heading in report, heading
    for v in verdicts:
        assert v["target"] in report
    assert report.count("**met**") + report.count("**MISSED**") == len(verdicts)

    assert set(results["plots"]) == PLOTS
    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        height, width = image.imread(path).shape[:2]
        assert height > 200 and width > 300, name
        assert f"]({name})" in report, name

    # Torn down: its box is gone, and so are its servers. (Its own box only: other runs on this
    # machine boot and remove boxes of their own meanwhile.)
    assert [b.name for b in set(sandbox.boxes()) - boxes_before if b.name.startswith("bench")] == []
    assert _leftovers() == []
