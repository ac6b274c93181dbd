"""The report's plots (matplotlib, Agg): labelled axes with units, legends, the targets drawn in."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend is chosen first
from matplotlib.patches import Patch

COLORS = {
    "direct": "#4c72b0",
    "sparkctl": "#dd8452",
    "nginx": "#55a868",
    "naive-aiohttp": "#c44e52",
    "vllm-router": "#8172b3",
}
DPI = 110


def draw(results: dict[str, Any], out: Path) -> list[str]:
    """Every plot the results allow; returns the file names written."""
    sc = results["scenarios"]
    written = []
    for name, fn, key in (
        ("gateway_latency.png", _gateway_latency, "gateway"),
        ("gateway_throughput.png", _gateway_throughput, "gateway"),
        ("gateway_cpu.png", _gateway_cpu, "gateway"),
        ("gateway_layouts.png", _gateway_layouts, "gateway_own_core"),
        ("streaming.png", _streaming, "streaming"),
        ("held_rss.png", _held, "held"),
        ("coldstart.png", _coldstart, "cold_start"),
    ):
        if key not in sc:
            continue
        fig = fn(sc)
        fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def _grouped(ax: Any, rows: list[dict[str, Any]], level_key: str, value: str, err: bool = True) -> None:
    """Bars grouped by level (client count), one per target, min … max over rounds as error bars."""
    names = _targets(rows)
    levels = sorted({r[level_key] for r in rows})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, lv in enumerate(levels):
            r = next((r for r in rows if r["target"] == name and r[level_key] == lv), None)
            if r is None:
                continue
            xs.append(j + (i - (len(names) - 1) / 2) * width)
            ys.append(r[value])
            lo.append(max(0.0, r[value] - r.get(value + "_min", r[value])))
            hi.append(max(0.0, r.get(value + "_max", r[value]) - r[value]))
        ax.bar(xs, ys, width, label=name, color=COLORS.get(name), yerr=[lo, hi] if err else None, capsize=2)
    ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])


def _gateway_latency(sc: dict[str, Any]) -> Any:
    rows = sc["gateway"]["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (key, title) in zip(axes, (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")), strict=True):
        _grouped(ax, rows, "clients", key)
        ax.set_yscale("log")
        ax.set_title(f"{title} latency (min … max over rounds)")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("latency (ms, log scale)")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(title="target")
    fig.suptitle("Non-streaming requests: latency by target (wrk)")
    fig.tight_layout()
    return fig


def _gateway_throughput(sc: dict[str, Any]) -> Any:
    rows = sc["gateway"]["summary"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _grouped(ax, rows, "clients", "rps")
    names = _targets(rows)
    levels = sorted({r["clients"] for r in rows})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        for j, lv in enumerate(levels):
            r = next((r for r in rows if r["target"] == name and r["clients"] == lv), None)
            if r and not math.isnan(r["rps_ratio"]):
                x = j + (i - (len(names) - 1) / 2) * width
                ax.annotate(
                    f"{r['rps_ratio']:.2f}×",
                    (x, r["rps"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests per second")
    ax.set_title("Non-streaming throughput (labels: ratio to direct, paired per round)")
    ax.set_ylim(0, max(r["rps_max"] for r in rows) * 1.3)  # room for the legend
    ax.legend(title="target", ncol=4, loc="upper center", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _gateway_layouts(sc: dict[str, Any]) -> Any:
    """Throughput ratio to direct in both layouts, side by side: the front sharing the engine's
    core, and the front on a core of its own (#18)."""
    panels = [
        ("gateway", "front and engine share one core"),
        ("gateway_own_core", "front on a core of its own"),
    ]
    panels = [(k, t) for k, t in panels if k in sc]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.3), sharey=True, squeeze=False)
    top = 0.0
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        rows = [r for r in sc[key]["summary"] if r["target"] != "direct"]
        _grouped(ax, rows, "clients", "rps_ratio")
        top = max(top, *(r["rps_ratio_max"] for r in rows))
        ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="target ≥ 0.5 × direct")
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("requests/s ÷ direct's (paired per round)")
    axes[0][0].set_ylim(0, max(1.05, top * 1.15))
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Non-streaming throughput relative to direct, by layout")
    fig.tight_layout()
    return fig


def _gateway_cpu(sc: dict[str, Any]) -> Any:
    rows = sc["gateway"]["summary"]
    names = _targets(rows)
    levels = sorted({r["clients"] for r in rows})
    fig, axes = plt.subplots(1, len(levels), figsize=(4.3 * len(levels), 4.2), sharey=True)
    for ax, lv in zip(axes, levels, strict=True):
        mine = [next(r for r in rows if r["target"] == n and r["clients"] == lv) for n in names]
        engine = [r["engine_cpu_us"] for r in mine]
        front = [r["proxy_cpu_us"] for r in mine]
        ax.bar(names, engine, color="#bbbbbb")
        ax.bar(names, front, bottom=engine, color=[COLORS.get(n, "#888") for n in names])
        ax.set_title(f"{lv} client{'s' if lv > 1 else ''}")
        ax.set_xlabel("target")
        ax.tick_params(axis="x", rotation=20)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("server CPU per request (µs)")
    axes[0].legend(
        handles=[
            Patch(facecolor="#bbbbbb", label="engine (emulator)"),
            Patch(facecolor="white", edgecolor="black", label="front, in the target's colour"),
        ],
        loc="upper left",
    )
    fig.suptitle("Server CPU per request (utime+stime): front on top of the engine")
    fig.tight_layout()
    return fig


def _streaming(sc: dict[str, Any]) -> Any:
    rows = sc["streaming"]["summary"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    _grouped(a1, rows, "streams_concurrent", "chunks_per_s")
    a1.set_xlabel("concurrent streams")
    a1.set_ylabel("chunks per second (all streams)")
    a1.set_title("Aggregate streaming throughput")
    a1.grid(axis="y", alpha=0.3)
    a1.set_ylim(0, max(r["chunks_per_s_max"] for r in rows) * 1.3)  # room for the legend
    a1.legend(title="target", ncol=4, loc="upper center", fontsize=8)
    _grouped(a2, rows, "streams_concurrent", "ttfc_p50_ms")
    a2.set_yscale("log")
    a2.set_xlabel("concurrent streams")
    a2.set_ylabel("time to first chunk, p50 (ms, log scale)")
    a2.set_title("Time to first chunk")
    a2.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle("Streaming (min … max over rounds)")
    fig.tight_layout()
    return fig


def _held(sc: dict[str, Any]) -> Any:
    h = sc["held"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = [s["t"] for s in h["samples"]]
    ys = [s["rss_kib"] / 1024 for s in h["samples"]]
    ax.plot(xs, ys, marker="o", color=COLORS["sparkctl"], label="sparkctl daemon VmRSS")
    ax2 = ax.twinx()
    ax2.plot(xs, [s["connections"] for s in h["samples"]], color="#888888", ls="--", label="streams open")
    ax2.set_ylabel("streams open")
    ax.axhline(200e6 / 2**20, color="#c44e52", ls=":", label="target: 200 MB")
    ax.set_ylim(0, max(max(ys) * 1.2, 200e6 / 2**20 * 1.1))
    ax.set_xlabel("time since the first stream opened (s)")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(f"{h['connections']} slow streams held open through sparkctl")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _coldstart(sc: dict[str, Any]) -> Any:
    series: list[tuple[str, list[float]]] = []
    for name in sc["cold_start"]["summary"]:
        series.append((name, [r["overhead_ms"] for r in sc["cold_start"]["runs"] if r["variant"] == name]))
    if "swap" in sc:
        series.append(("sparkctl swap A→B", [r["overhead_ms"] for r in sc["swap"]["runs"]]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (_, vals) in enumerate(series):
        xs = [i + (k % 7 - 3) * 0.04 for k in range(len(vals))]
        ax.scatter(xs, [max(v, 0.1) for v in vals], s=18, alpha=0.7)
        if vals:
            med = statistics.median(vals)
            ax.hlines(max(med, 0.1), i - 0.3, i + 0.3, color="black", lw=2)
            ax.annotate(f"median {med:.0f} ms", (i + 0.32, max(med, 0.1)), fontsize=8, va="center")
    ax.axhline(50, color="#c44e52", ls=":", label="cold-start target: 50 ms")
    ax.axhline(200, color="#8172b3", ls=":", label="swap target: 200 ms")
    ax.set_yscale("log")
    ax.set_xticks(range(len(series)), [n for n, _ in series], rotation=12)
    ax.set_xlim(-0.5, len(series) - 0.2)
    ax.set_ylabel("overhead beyond the engine's exec→ready (ms, log scale)")
    ax.set_title("Cold start and swap: overhead per run (bar: median)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    return fig
