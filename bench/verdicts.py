"""The targets of BRIEF §7 / issue 7, each judged met or missed from one run's results.

A target whose scenario failed or did not run is "not measured", never "met".
"""

from __future__ import annotations

import math
from typing import Any

MB = 1_000_000  # the RSS target is in decimal megabytes: the stricter reading


def _row(rows: list[dict[str, Any]], target: str, key: str, value: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r[key] == value), None)


def _verdict(
    name: str, threshold: str, measured: float | None, fmt: str, met: bool | None, detail: str
) -> dict[str, Any]:
    ok = measured is not None and not (isinstance(measured, float) and math.isnan(measured))
    return {
        "target": name,
        "threshold": threshold,
        "measured": measured if ok else None,
        "measured_text": fmt.format(measured) if ok else "not measured",
        "met": met if ok else None,
        "detail": detail,
    }


def _cpu_verdict(gw: list[dict[str, Any]]) -> dict[str, Any]:
    """#18: the daemon's CPU per request below the naive proxy's, at 16 clients."""
    s, n = _row(gw, "sparkctl", "clients", 16), _row(gw, "naive-aiohttp", "clients", 16)
    v = s["proxy_cpu_us"] / n["proxy_cpu_us"] if s and n and n["proxy_cpu_us"] else None
    others = [r for r in gw if r["clients"] == 16 and r["target"] not in ("direct", "sparkctl")]
    detail = ", ".join(f"{r['target']} {r['proxy_cpu_us']:.0f} µs" for r in [s or {}, *others] if r)
    return _verdict(
        "front CPU per request at 16 clients",
        "< 1.0 × naive proxy's",
        v,
        "{:.2f} × naive",
        v is not None and v < 1.0,
        detail,
    )


def evaluate(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    gw = scenarios.get("gateway", {}).get("summary") or []
    row = _row(gw, "sparkctl", "clients", 1)
    v = row["added_p50_ms"] if row else None
    out.append(
        _verdict(
            "added p50 latency at 1 client",
            "≤ 0.3 ms",
            v,
            "{:+.3f} ms",
            v is not None and v <= 0.3,
            f"sparkctl p50 {row['p50_ms']:.3f} ms vs direct, paired per round (min … max "
            f"{row['added_p50_ms_min']:+.3f} … {row['added_p50_ms_max']:+.3f})"
            if row
            else "",
        )
    )
    row = _row(gw, "sparkctl", "clients", 16)
    v = row["rps_ratio"] if row else None
    out.append(
        _verdict(
            "throughput at 16 clients",
            "≥ 0.5 × direct",
            v,
            "{:.2f} × direct",
            v is not None and v >= 0.5,
            f"{row['rps']:,.0f} req/s (min … max ratio {row['rps_ratio_min']:.2f} … "
            f"{row['rps_ratio_max']:.2f})"
            if row
            else "",
        )
    )
    out.append(_cpu_verdict(gw))
    own = scenarios.get("gateway_own_core", {}).get("summary") or []
    row = _row(own, "sparkctl", "clients", 16)
    v = row["rps_ratio"] if row else None
    out.append(
        _verdict(
            "throughput at 16 clients, front on a core of its own",
            "≥ 0.5 × direct",
            v,
            "{:.2f} × direct",
            v is not None and v >= 0.5,
            f"{row['rps']:,.0f} req/s (min … max ratio {row['rps_ratio_min']:.2f} … "
            f"{row['rps_ratio_max']:.2f}); the layout of a Spark, not BRIEF §7's shared core"
            if row
            else "",
        )
    )
    st = scenarios.get("streaming", {}).get("summary") or []
    row = _row(st, "sparkctl", "streams_concurrent", 64)
    v = row["chunks_ratio"] if row else None
    out.append(
        _verdict(
            "streaming chunks/s at 64 streams",
            "≥ 0.5 × direct",
            v,
            "{:.2f} × direct",
            v is not None and v >= 0.5,
            f"{row['chunks_per_s']:,.0f} chunks/s (min … max ratio {row['chunks_ratio_min']:.2f} … "
            f"{row['chunks_ratio_max']:.2f})"
            if row
            else "",
        )
    )
    levels = sorted({r["streams_concurrent"] for r in st})
    pairs: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for lv in levels:
        s = _row(st, "sparkctl", "streams_concurrent", lv)
        n = _row(st, "naive-aiohttp", "streams_concurrent", lv)
        if s and n and n["chunks_per_s"]:
            pairs.append((lv, s, n))
    worst = min((s["chunks_per_s"] / n["chunks_per_s"] for _, s, n in pairs), default=None)
    out.append(
        _verdict(
            "streaming chunks/s never below the naive aiohttp proxy",
            "≥ 1.0 × naive at every concurrency",
            worst,
            "worst {:.2f} × naive",
            worst is not None and worst >= 1.0,
            ", ".join(f"{lv} streams: {s['chunks_per_s'] / n['chunks_per_s']:.2f}×" for lv, s, n in pairs),
        )
    )
    cold = scenarios.get("cold_start", {}).get("summary") or {}
    overhead = (cold.get("sparkctl (process unit)") or {}).get("overhead_ms") or {}
    v = overhead["median"] if overhead.get("n") else None
    out.append(
        _verdict(
            "cold-start overhead (median, process units)",
            "≤ 50 ms",
            v,
            "{:.1f} ms",
            v is not None and v <= 50,
            f"p10 … p90 {overhead['p10']:.1f} … {overhead['p90']:.1f} ms over {overhead['n']} runs"
            if v is not None
            else "",
        )
    )
    swap = scenarios.get("swap", {}).get("summary") or {}
    v = swap["overhead_ms"]["median"] if swap and swap["overhead_ms"]["n"] else None
    out.append(
        _verdict(
            "swap overhead (median, beyond the memory gate and the load)",
            "≤ 200 ms",
            v,
            "{:.1f} ms",
            v is not None and v <= 200,
            f"p10 … p90 {swap['overhead_ms']['p10']:.1f} … {swap['overhead_ms']['p90']:.1f} ms over "
            f"{swap['overhead_ms']['n']} swaps; the memory gate waits for nothing (tiny fractions)"
            if v is not None
            else "",
        )
    )
    held = scenarios.get("held") or {}
    if "rss_during_kib" in held:
        n = held["connections"]
        rss = held["rss_during_kib"] * 1024
        detail = f"{n} streams held: daemon VmRSS {held['rss_before_kib'] / 1024:.1f} MiB before, "
        detail += f"{held['rss_during_kib'] / 1024:.1f} MiB during, "
        detail += f"{held['rss_per_connection_kib']:.1f} KiB per connection"
        if n < 1000:
            rss = (held["rss_before_kib"] + held["rss_per_connection_kib"] * 1000) * 1024
            detail += f"; extrapolated to 1000 from {n} (short run)"
        out.append(
            _verdict(
                "1000 held streams: gateway RSS", "< 200 MB", rss / MB, "{:.1f} MB", rss < 200 * MB, detail
            )
        )
    else:
        out.append(_verdict("1000 held streams: gateway RSS", "< 200 MB", None, "", None, ""))
    out += _detect_verdicts(scenarios.get("detect", {}).get("summary") or {})
    return out


def _detect_verdicts(sm: dict[str, Any]) -> list[dict[str, Any]]:
    """BRIEF: a dead engine and a client gone are noticed within 1 s; judged on the slowest run."""
    out = []
    death = sm.get("engine_death_ms") or {}
    v = death["max"] if death.get("n") else None
    out.append(
        _verdict(
            "engine killed mid-stream: the client has the error (slowest run)",
            "≤ 1000 ms",
            v,
            "{:.0f} ms",
            v is not None and v <= 1000 and sm.get("engine_death_error_events") == death.get("n"),
            f"median {death['median']:.1f} ms; {sm['engine_death_error_events']} of {death['n']} runs ended "
            "with an error event"
            if v is not None
            else "",
        )
    )
    up, lease = sm.get("upstream_closed_ms") or {}, sm.get("lease_released_ms") or {}
    v = max(up["max"], lease["max"]) if up.get("n") and lease.get("n") else None
    out.append(
        _verdict(
            "client gone mid-stream: engine connection closed and lease released (slowest run)",
            "≤ 1000 ms",
            v,
            "{:.0f} ms",
            v is not None and v <= 1000,
            f"medians {up['median']:.1f} ms (engine connection) and {lease['median']:.1f} ms (lease)"
            if v is not None
            else "",
        )
    )
    return out
