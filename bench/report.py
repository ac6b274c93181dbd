"""report.md: the targets first, then one table per scenario with the ratios beside the figures,
the plots, how it was measured, and the machine's facts."""

from __future__ import annotations

import math
from typing import Any

VERDICT = {True: "**met**", False: "**MISSED**", None: "not measured"}


def _f(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:+,.0f}" if sign else f"{value:,.0f}"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _range(row: dict[str, Any], key: str, digits: int = 2) -> str:
    return f"{_f(row.get(key + '_min'), digits)} … {_f(row.get(key + '_max'), digits)}"


def _table(head: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(head))]
    return [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render(results: dict[str, Any]) -> str:
    sc = results["scenarios"]
    m = results["machine"]
    lines = [
        "# sparkctl benchmark report",
        "",
        f"`{results['command']}` — {results['mode']} run, {results['started']} → "
        f"{results.get('finished', '?')} "
        f"({results.get('wall_seconds', 0):.0f} s), sparkctl {m['packages'].get('sparkctl')} at commit "
        f"`{m.get('sparkctl_commit')}`, on {m['cpu_model']} ({m['cores_usable']} cores). Every figure "
        "below comes "
        "from this one run; targets are BRIEF §7's. How it is measured: `docs/performance.md`.",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "threshold", "measured", "verdict", "detail"],
            [
                [v["target"], v["threshold"], v["measured_text"], VERDICT[v["met"]], v["detail"]]
                for v in results["verdicts"]
            ],
            right_from=99,
        ),
        "",
    ]
    if results["errors"]:
        lines += ["## Failures", "", "These scenarios did not complete; their targets are not measured.", ""]
        for name, err in results["errors"].items():
            lines += [f"### {name}", "", "```", err[-3000:], "```", ""]
    lines += _checks(sc)
    if "gateway" in sc:
        lines += _gateway(sc["gateway"])
    if "gateway_own_core" in sc:
        lines += _gateway_own_core(sc["gateway_own_core"])
    if "streaming" in sc:
        lines += _streaming(sc["streaming"])
    if "held" in sc:
        lines += _held(sc["held"])
    if "cold_start" in sc:
        lines += _cold(sc["cold_start"])
    if "swap" in sc:
        lines += _swap(sc["swap"])
    if "eta" in sc:
        lines += _eta(sc["eta"])
    if "detect" in sc:
        lines += _detect(sc["detect"])
    if "relay" in sc:
        lines += _relay(sc["relay"])
    lines += _machine(results)
    return "\n".join(lines) + "\n"


def _checks(sc: dict[str, Any]) -> list[str]:
    """What must hold whatever the timings: no errors, no lease outliving its request."""
    rows = []
    before = 0  # the streaming runs use the same model as the non-streaming ones: count what they add
    for key, model, what in (
        (
            "gateway",
            "bench-fast",
            "after the non-streaming runs (wrk hangs up mid-request when its time is up)",
        ),
        ("streaming", "bench-fast", "added by the streaming runs"),
        ("held", "bench-slow", "after the held streams' clients hung up"),
    ):
        if key in sc and "leases_left" in sc[key]:
            n = sc[key]["leases_left"] - (before if key == "streaming" else 0)
            if key == "gateway":
                before = sc[key]["leases_left"]
            value = f"{n} (all runs: {sc[key]['leases_left']})" if key == "streaming" and before else str(n)
            rows.append([f"leases still counted on `{model}` {what}", value, "ok" if n == 0 else "**leak**"])
    if "swap" in sc and "leases_before_first_swap" in sc["swap"]:
        s = sc["swap"]
        left = ", ".join(f"{m}: {n}" for m, n in s["leases_before_first_swap"].items())
        rows.append(
            [
                "first exclusive start (drains the shared models; a leaked lease holds it until "
                "drain_timeout)",
                f"{s['first_swap_seconds']:.1f} s ({left} leases)",
                "ok" if not any(s["leases_before_first_swap"].values()) else "**slowed by leaked leases**",
            ]
        )
    errors = sum(r["errors"] for r in sc.get("gateway", {}).get("summary", []))
    errors += sum(r["errors"] for r in sc.get("streaming", {}).get("summary", []))
    if "gateway" in sc or "streaming" in sc:
        rows.append(
            ["failed requests and streams (all targets)", str(errors), "ok" if errors == 0 else "**errors**"]
        )
    if not rows:
        return []
    return ["## Checks", "", *_table(["check", "value", "verdict"], rows, right_from=1), ""]


def _plot(name: str, alt: str) -> list[str]:
    return [f"![{alt}]({name})", ""]


def _gateway_rows(g: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in g["summary"]:
        direct = r["target"] == "direct"
        rows.append(
            [
                f"`{r['target']}`",
                str(r["clients"]),
                _f(r["p50_ms"]),
                _f(r["p90_ms"]),
                _f(r["p99_ms"]),
                "—" if direct else f"{_f(r['added_p50_ms'], sign=True)} ({_range(r, 'added_p50_ms', 3)})",
                "—" if direct else _f(r["added_p99_ms"], sign=True),
                _f(r["rps"], 0),
                f"{_f(r['rps_ratio'], 2)} ({_range(r, 'rps_ratio')})",
                _f(r["proxy_cpu_us"], 0),
                _f(r["engine_cpu_us"], 0),
                "—" if direct else _f(r["added_cpu_us"], 0, sign=True),
                f"{r['server_busy'] * 100:.0f}% / {r['loadgen_busy'] * 100:.0f}%",
                str(r["errors"]),
            ]
        )
    return rows


_GATEWAY_HEAD = [
    "target",
    "clients",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "added p50 ms (min … max)",
    "added p99 ms",
    "req/s",
    "× direct (min … max)",
    "front CPU µs/req",
    "engine CPU µs/req",
    "added CPU µs/req",
    "busy server / loadgen",
    "errors",
]


def _gateway(g: dict[str, Any]) -> list[str]:
    rows = _gateway_rows(g)
    return [
        "## Gateway overhead: small non-streaming requests",
        "",
        f"Load generator: {g['load_generator']}; {g['rounds']} interleaved rounds × {g['wrk_seconds']:g} s "
        "per "
        f"target and client count; {g['request_body_bytes']}-byte chat request, `max_tokens` 16, answered at "
        "once by the emulator. Medians over rounds; added latency and ratios are paired per round against "
        "`direct`, then the median (min … max over rounds in brackets). CPU is utime+stime per request "
        "from /proc/PID/stat: the front (sparkctl's daemon, nginx master + worker, the naive proxy) and the "
        "engine; *added CPU* = front + engine − the engine's own CPU in `direct`. *Busy* = the server core's "
        "/ the load generator's CPU share.",
        "",
        *_table(
            _GATEWAY_HEAD,
            rows,
        ),
        "",
        *_plot("gateway_latency.png", "Latency by target and client count"),
        *_plot("gateway_throughput.png", "Requests per second by target and client count"),
        *_plot("gateway_cpu.png", "Server CPU per request"),
    ]


def _gateway_own_core(g: dict[str, Any]) -> list[str]:
    return [
        "## Gateway overhead with the front on a core of its own",
        "",
        f"The same requests and load generator as above, {g['rounds']} interleaved rounds, in another "
        f"layout: {g['layout']}. This is the layout of a Spark, where the gateway does not share a "
        "core with the engine's API server; `direct` is measured in it too, so the ratios compare like "
        "with like. The load generator shares its core with the engine here, which costs the engine a "
        "little.",
        "",
        *_table(_GATEWAY_HEAD, _gateway_rows(g)),
        "",
        *_plot("gateway_layouts.png", "Throughput ratio to direct: shared core and own core"),
    ]


def _relay(r: dict[str, Any]) -> list[str]:
    rows = []
    for row in r["summary"]:
        direct, local = row["target"] == "direct", row["target"] == "sparkctl"
        rows.append(
            [
                f"`{row['target']}`",
                str(row["clients"]),
                _f(row["p50_ms"]),
                _f(row["p90_ms"]),
                "—" if direct else _f(row["added_p50_ms"], sign=True),
                "—" if direct else _f(row["added_p90_ms"], sign=True),
                "—" if direct or local else _f(row["over_local_p50_ms"], sign=True),
                "—" if direct or local else _f(row["over_local_p90_ms"], sign=True),
                _f(row["rps"], 0),
                _f(row["added_rps_ratio"], 2),
                "—" if direct or local else _f(row["over_local_rps_ratio"], 2),
                _f(row["proxy_cpu_us"], 0),
                str(row["errors"]),
            ]
        )
    return [
        "## Relay to a peer node",
        "",
        "What a request for a model another node of a cluster serves costs (#15): a second daemon "
        "(its node `bench-front`, an empty catalog, the benchmark's daemon its one peer) relays it to "
        "the model's node. `direct` is the engine, `sparkctl` the model's own node, `relay` the other "
        f"node. {r['rounds']} interleaved rounds × {r['wrk_seconds']:g} s per target and client count, "
        f"the gateway scenario's request; {r['layout']}. Medians over rounds; *added* is paired per "
        "round against `direct`, *relay adds* against `sparkctl` (the hop itself). Front CPU: both "
        f"daemons for `relay`. Leases left after the run: {r['leases_left']}. On two Sparks the hop "
        "crosses the link, not loopback, and each daemon has cores of its own.",
        "",
        *_table(
            [
                "target",
                "clients",
                "p50 ms",
                "p90 ms",
                "added p50 ms",
                "added p90 ms",
                "relay adds p50 ms",
                "relay adds p90 ms",
                "req/s",
                "× direct",
                "× local",
                "front CPU µs/req",
                "errors",
            ],
            rows,
        ),
        "",
    ]


def _detect(d: dict[str, Any]) -> list[str]:
    sm = d["summary"]
    rows = [
        [
            "engine killed mid-stream → the client has the error event",
            _spread(sm["engine_death_ms"]),
            _minmax(sm["engine_death_ms"]),
            f"{sm['engine_death_error_events']} of {sm['runs']} with an error event",
        ],
        [
            "client hangs up mid-stream → the relay's connection to the engine closed",
            _spread(sm["upstream_closed_ms"]),
            _minmax(sm["upstream_closed_ms"]),
            "",
        ],
        [
            "client hangs up mid-stream → no lease counted (admin API)",
            _spread(sm["lease_released_ms"]),
            _minmax(sm["lease_released_ms"]),
            "polling the admin API adds ~1–2 ms",
        ],
    ]
    return [
        "## Detection: a dead engine, a client gone",
        "",
        f"{sm['runs']} runs each, streams of `bench-detect` ({d['model_tokens_per_second']:g} tokens/s); "
        "BRIEF: within 1 s. Engine death: SIGKILL to the engine once the stream's first chunk is in, "
        "timed to the error event's arrival at the client. Client disconnect: the client closes its "
        "socket once the first chunk is in; timed to the engine's side of the relay's connection leaving "
        "/proc/net/tcp and to the lease's release, polled every ~2 ms.",
        "",
        *_table(["event", "median (p10 … p90) ms", "min … max ms", "note"], rows, right_from=1),
        "",
    ]


def _streaming(s: dict[str, Any]) -> list[str]:
    rows = []
    for r in s["summary"]:
        direct = r["target"] == "direct"
        rows.append(
            [
                f"`{r['target']}`",
                str(r["streams_concurrent"]),
                _f(r["ttfc_p50_ms"]),
                _f(r["ttfc_p99_ms"]),
                "—" if direct else _f(r["added_ttfc_p50_ms"], sign=True),
                _f(r["chunks_per_s"], 0),
                f"{_f(r['chunks_ratio'], 2)} ({_range(r, 'chunks_ratio')})",
                _f(r["chunks_per_stream"], 1),
                _f(r["proxy_cpu_us_per_stream"], 0),
                _f(r["engine_cpu_us_per_stream"], 0),
                f"{r['server_busy'] * 100:.0f}%",
                str(r["errors"]),
            ]
        )
    return [
        "## Streaming",
        "",
        f"Load generator: {s['load_generator']}; {s['rounds']} interleaved rounds. Each stream is "
        f"{s['tokens_per_stream']} content chunks written back to back by the engine (plus the role chunk, "
        "the "
        "final chunk and `[DONE]`); each client connection runs streams one after another. TTFC = from the "
        "request's write to the first `data:` event; chunks/s = all events of the level / its wall time.",
        "",
        *_table(
            [
                "target",
                "concurrent streams",
                "TTFC p50 ms",
                "TTFC p99 ms",
                "added TTFC p50 ms",
                "chunks/s",
                "× direct (min … max)",
                "events/stream",
                "front CPU µs/stream",
                "engine CPU µs/stream",
                "server core busy",
                "errors",
            ],
            rows,
        ),
        "",
        *_plot("streaming.png", "Streaming throughput and time to first chunk"),
    ]


def _held(h: dict[str, Any]) -> list[str]:
    return [
        "## Streams held open",
        "",
        f"{h['connections']} streaming requests through sparkctl to an engine generating one token per "
        f"second, all open at once (opened in {h['open_seconds']:.1f} s, held {h['held_seconds']:g} s); the "
        "daemon's VmRSS from /proc. File-descriptor limit raised to "
        f"{h['fd_limit'][0]} (soft) for the benchmark and the daemon it starts.",
        "",
        *_table(
            [
                "daemon VmRSS before",
                "during (max)",
                "after closing",
                "per connection",
                "streams alive",
                "chunks/s while held",
            ],
            [
                [
                    f"{h['rss_before_kib'] / 1024:.1f} MiB",
                    f"{h['rss_during_kib'] / 1024:.1f} MiB",
                    f"{h['rss_after_kib'] / 1024:.1f} MiB",
                    f"{h['rss_per_connection_kib']:.1f} KiB",
                    f"{h['streams_alive_at_end']} / {h['connections']}",
                    f"{h['chunks_per_s_while_held']:.0f}",
                ]
            ],
            right_from=0,
        ),
        "",
        *_plot("held_rss.png", "Daemon RSS while streams are held open"),
    ]


def _spread(s: dict[str, Any] | None, digits: int = 1) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{_f(s['median'], digits)} ({_f(s['p10'], digits)} … {_f(s['p90'], digits)})"


def _minmax(s: dict[str, Any] | None, digits: int = 1) -> str:
    return f"{_f(s['min'], digits)} … {_f(s['max'], digits)}" if s and s.get("n") else "—"


def _steps(summaries: dict[str, dict[str, Any]]) -> list[str]:
    steps = list(dict.fromkeys(k for s in summaries.values() for k in s["steps_ms"]))
    rows = [[k, *(_spread(s["steps_ms"].get(k)) for s in summaries.values())] for k in steps]
    return _table(["step (median (p10 … p90) ms)", *summaries.keys()], rows)


def _cold(c: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in c["summary"].items():
        notes = []
        if "container_start_ms" in s:
            notes.append(
                f"container start (start job → engine process) {_spread(s['container_start_ms'])} ms, not "
                f"counted; with it: {_spread(s['overhead_incl_container_ms'])} ms"
            )
        if "systemd_start_job_after_request_ms" in s:
            notes.append(
                f"systemd's start-job stamp {_spread(s['systemd_start_job_after_request_ms'])} ms after "
                "the request"
            )
        rows.append(
            [
                name,
                _spread(s.get("overhead_ms")),
                _minmax(s.get("overhead_ms")),
                _spread(s.get("overhead_via_execmainstart_ms")),
                _spread(s.get("ttfb_ms"), 0),
                _spread(s.get("exec_to_ready_ms"), 0),
                str(s.get("overhead_ms", {}).get("n", 0)),
                "; ".join(notes),
            ]
        )
    lo, hi = c["load_time_range_s"]
    return [
        "## Cold start",
        "",
        "Overhead = time to first byte at the client (over a connection opened beforehand; it includes two "
        "loopback hops) minus the engine's own exec-to-ready time: "
        f"{c['exec_to_ready_source']}. The engine's load time is drawn from U[{lo:g}, {hi:g}] s per run, the "
        "same draw for each variant; variants interleave; a first, uncounted run of each warms caches. The "
        "engine's figure starts at its process's fork (from /proc, in 10 ms clock ticks), so it holds "
        "systemd's "
        "fork-to-exec setup of the unit; systemd's ExecMainStartTimestamp is taken after the manager's fork "
        "returns, later: the overhead computed from it is the conservative reading. Median (p10 … p90) ms.",
        "",
        *_table(
            [
                "variant",
                "overhead ms",
                "min … max",
                "overhead via ExecMainStart",
                "time to first byte ms",
                "engine exec→ready ms",
                "runs",
                "notes",
            ],
            rows,
        ),
        "",
        "Where the time goes, on one clock (the client's, systemd's unit timestamps, the engine's ready "
        "instant; the engine's fork comes from /proc in 10 ms ticks, so a step that begins or ends there is "
        "good to ±10 ms and may read slightly negative):",
        "",
        *_steps(c["summary"]),
        "",
        *_plot("coldstart.png", "Cold-start and swap overhead per run"),
    ]


def _swap(s: dict[str, Any]) -> list[str]:
    sm = s["summary"]
    return [
        "## Swap between two exclusive models",
        "",
        f"A request for one exclusive model while the other is ready and idle ({s['fractions']}). Overhead "
        "is "
        "defined as for a cold start: time to first byte minus the new engine's exec-to-ready. It includes "
        "the old engine's own shutdown (systemd's journal: *Stopping* → *Stopped*) and everything between "
        "its "
        "stop and the new engine's fork: sparkctl's memory gate (which waits for nothing here), the "
        "supervisor, D-Bus and systemd's fork; that interval bounds the gate's share. The overhead without "
        "the old engine's shutdown is beside it.",
        "",
        *_table(
            [
                "swaps",
                "overhead ms",
                "min … max",
                "without the old engine's shutdown",
                "gate + supervisor + fork ms",
                "time to first byte ms",
                "engine exec→ready ms",
            ],
            [
                [
                    str(sm.get("overhead_ms", {}).get("n", 0)),
                    _spread(sm.get("overhead_ms")),
                    _minmax(sm.get("overhead_ms")),
                    _spread(sm.get("overhead_excl_old_engine_stop_ms")),
                    _spread(sm.get("memory_gate_interval_ms")),
                    _spread(sm.get("ttfb_ms"), 0),
                    _spread(sm.get("exec_to_ready_ms"), 0),
                ]
            ],
            right_from=0,
        ),
        "",
        *_steps({"swap": sm}),
        "",
    ]


def _eta(e: dict[str, Any]) -> list[str]:
    sm = e["summary"]
    typical = ", ".join(f"{m} {s:.1f} s" for m, s in e["typical_load_s"].items())
    rows = []
    for key, label in (
        ("learned", "learned, all"),
        ("learned_cold", "learned, cold starts"),
        ("learned_swap", "learned, swaps"),
        ("learned_behind", "learned, behind another swap"),
        ("guess", "first start (a guess)"),
    ):
        row = sm.get(key) or {}
        if not row.get("n"):
            rows.append([label, "0", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                label,
                str(row["n"]),
                _f(row["median_abs_error_s"], 2),
                f"{row['median_abs_error_pct']:.0f} %",
                _f(row["median_error_s"], 2, sign=True),
                _f(row["median_wait_s"], 1),
            ]
        )
    return [
        "## ETA against the real wait",
        "",
        "Three exclusive models with typical load times drawn at random "
        f"({typical}); each start's load time is drawn within ±{e['jitter'] * 100:.0f} % of its "
        "model's. Rounds interleave cold starts, swaps and requests behind another swap (a second "
        "model asked for while the first is on its way). A round's error is the arrival of the "
        "stream's first keep-alive comment plus the `eta=` it carries, minus the arrival of the first "
        "chunk. The first start of each model has no history: its estimate is guessed from the size "
        "on disk (emulated models have none, so the guess is the base alone) and is shown apart.",
        "",
        *_table(
            ["rounds", "n", "median abs error s", "of the wait", "bias s", "median wait s"],
            rows,
        ),
        "",
    ]


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    rows = [
        [
            "CPU",
            f"{m['cpu_model']} ({m['architecture']}), {m['cores_usable']} usable of {m['cores_online']} "
            "cores",
        ],
        ["memory", f"{m['memory_gib']} GiB"],
        ["OS / kernel", f"{m['os']} / {m['kernel']} ({m['virtualization']})"],
        ["Python", f"{m['python']} ({m['python_implementation']})"],
        ["packages", ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)],
        ["pinning", m["pinning_description"]],
        ["sysctl", ", ".join(f"{k} = {v}" for k, v in m["sysctl"].items())],
        ["CPU accounting", f"/proc/PID/stat utime+stime, {m['clock_ticks_per_s']} ticks/s"],
        ["file descriptors", f"soft/hard RLIMIT_NOFILE {results['fd_limit'][0]}/{results['fd_limit'][1]}"],
    ]
    return ["## Machine", "", *_table(["", ""], rows, right_from=99), ""]
