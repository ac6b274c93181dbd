"""The emulator's command line: `[serve] MODEL [vLLM flags] [emulation knobs]`.

It accepts whatever `vllm serve` accepts, so a model unit renders the same `Exec=` against the
emulator as against vLLM: the flags vLLM shares with it are honoured, every other vLLM flag is
ignored, and the emulation knobs (which vLLM lacks) shape its behaviour over time.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    model: str
    served_names: tuple[str, ...]
    host: str
    port: int
    max_model_len: int
    api_key: str | None
    load_time: float
    tokens_per_second: float
    memory_mb: int
    unhealthy_after: float | None
    crash_after: float | None
    exit_code: int
    log_requests: bool
    seed: int  # vLLM's --seed: with the prompt, it decides where each reply ends
    # vLLM's multi-node mode (emulator/multinode.py): rank 0 is the head, the others workers
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29501
    heartbeat_timeout: float = 3.0
    # seconds between SIGTERM and exit: a slow teardown, or (large) an engine hung in it
    stop_time: float = 0.0


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an unknown vLLM flag must never be taken for a prefix of one of ours.
    p = argparse.ArgumentParser(
        prog="sparkctl emulate",
        description="Emulate a vLLM OpenAI-compatible server without a GPU.",
        allow_abbrev=False,
    )
    p.add_argument("model_tag", nargs="?", metavar="MODEL")
    p.add_argument("--model", dest="model_flag")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--enable-log-requests", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29501)
    knobs = p.add_argument_group("emulation knobs (not vLLM flags)")
    knobs.add_argument("--load-time", type=float, default=0.0, metavar="S")
    knobs.add_argument("--tokens-per-second", type=float, default=0.0, metavar="N")
    knobs.add_argument("--memory-mb", type=int, default=0, metavar="N")
    knobs.add_argument("--unhealthy-after", type=float, default=None, metavar="S")
    knobs.add_argument("--crash-after", type=float, default=None, metavar="S")
    knobs.add_argument("--exit-code", type=int, default=1, metavar="N")
    knobs.add_argument("--heartbeat-timeout", type=float, default=3.0, metavar="S")
    knobs.add_argument("--stop-time", type=float, default=0.0, metavar="S")
    return p


def parse_args(argv: list[str]) -> Config:
    """Parse `[serve] MODEL [vLLM flags]`; flags we do not know are vLLM's and are ignored."""
    if argv and argv[0] == "serve":
        argv = argv[1:]
    parser = _parser()
    ns, _unknown = parser.parse_known_args(argv)
    # --model wins: an unknown flag's value may have landed in the positional slot.
    model = ns.model_flag or ns.model_tag
    if not model:
        parser.error("a MODEL is required (positional or --model)")
    if ns.nnodes < 1 or not 0 <= ns.node_rank < ns.nnodes:
        parser.error(f"--node-rank must be in 0..{ns.nnodes - 1} (--nnodes {ns.nnodes})")
    if not 0 < ns.master_port < 65536:
        parser.error(f"--master-port must be a port, got {ns.master_port}")
    return Config(
        model=model,
        served_names=tuple(ns.served_model_name or [model]),
        host=ns.host,
        port=ns.port,
        max_model_len=ns.max_model_len,
        api_key=ns.api_key or None,
        load_time=max(0.0, ns.load_time),
        tokens_per_second=max(0.0, ns.tokens_per_second),
        memory_mb=max(0, ns.memory_mb),
        unhealthy_after=ns.unhealthy_after,
        crash_after=ns.crash_after,
        exit_code=ns.exit_code,
        log_requests=ns.enable_log_requests,
        seed=ns.seed,
        nnodes=ns.nnodes,
        node_rank=ns.node_rank,
        master_addr=ns.master_addr,
        master_port=ns.master_port,
        heartbeat_timeout=max(0.5, ns.heartbeat_timeout),
        stop_time=max(0.0, ns.stop_time),
    )
