"""How much each scenario measures: the full run and the CI-sized `--quick` run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # Gateway overhead (wrk, non-streaming): seconds per measured run, interleaved rounds.
    rounds: int
    wrk_seconds: int  # wrk takes whole seconds
    wrk_warmup_seconds: int
    clients: tuple[int, ...]
    own_core_rounds: int  # the same, with the front on a core of its own
    # Streaming: streams per level (at least one per client), interleaved rounds.
    stream_rounds: int
    stream_levels: tuple[int, ...]
    streams_per_level: dict[int, int]
    stream_tokens: int
    # Held connections: how many, and how long they are held once all are open.
    held: int
    held_seconds: float
    # Cold start and swap: runs per variant; the engine's load time is drawn per run.
    cold_runs: int
    swap_runs: int
    load_time: tuple[float, float]
    # ETA: interleaved cold starts and swaps of three models with random load times.
    eta_runs: int
    # Detection: engines killed mid-stream, and clients that hang up mid-stream, each.
    detect_runs: int


FULL = Profile(
    name="full",
    rounds=5,
    wrk_seconds=3,
    wrk_warmup_seconds=1,
    clients=(1, 16, 64),
    own_core_rounds=3,
    stream_rounds=3,
    stream_levels=(1, 64, 512),
    streams_per_level={1: 300, 64: 1280, 512: 2048},
    stream_tokens=64,
    held=1000,
    held_seconds=5.0,
    cold_runs=12,
    swap_runs=12,
    load_time=(1.0, 2.0),
    eta_runs=24,
    detect_runs=10,
)

QUICK = Profile(
    name="quick",
    rounds=1,
    wrk_seconds=1,
    wrk_warmup_seconds=1,
    clients=(1, 16, 64),
    own_core_rounds=1,
    stream_rounds=1,
    stream_levels=(1, 64, 512),
    streams_per_level={1: 20, 64: 128, 512: 512},
    stream_tokens=64,
    held=100,
    held_seconds=1.0,
    cold_runs=2,
    swap_runs=2,
    load_time=(0.3, 0.6),
    eta_runs=6,
    detect_runs=2,
)
