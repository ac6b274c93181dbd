"""`sparkctl emulate`: a stand-in for a vLLM OpenAI server that needs no GPU.

It speaks vLLM's wire protocol (routes, JSON shapes, SSE framing, error bodies, Prometheus names)
closely enough for the gateway, the tests and the benchmarks to treat it as a real engine, while
its behaviour over time is dictated by knobs: how long it loads, how fast it generates, how much
memory it holds, when it turns unhealthy or crashes.

This package runs inside a minimal container image that holds only Python, aiohttp, this package
and sparkctl/__init__.py (sparkctl/sandbox/image.py copies them), so it imports nothing beyond
the standard library, aiohttp and its own modules. Each module imports only those listed above it:

- `config`: the command line, which accepts whatever `vllm serve` accepts;
- `tokens`: the stand-in tokenizer (a token is a word), reply words, where a reply ends;
- `wire`: reading JSON fields as vLLM's pydantic models do, vLLM's error bodies, JSON helpers;
- `tools`: which tool a reply calls, the same rule on every route;
- `protocol`: reading chat and text completion requests into Jobs, the limits every route shares;
- `responses`: what a generation came to (Outcome) and the chat/completion bodies reporting it;
- `metrics`: the counters /metrics reports, in vLLM's Prometheus names;
- `generation`: producing tokens over time, paced, buffered or handed to a route's Stream;
- `responses_api`, `anthropic`: the OpenAI Responses and Anthropic Messages routes' shapes;
- `tokenization`: /tokenize and /detokenize;
- `log`: the one-line messages on stdout that tests and benchmarks parse;
- `server`: the aiohttp routes;
- `lifecycle`: the process: load, bind, announce readiness, serve, stop or crash.

`main(argv)` runs it (`sparkctl emulate` calls it); so does `python -m sparkctl.emulator ARGS`.
"""

from __future__ import annotations

import time

# Taken before the rest of the package (and aiohttp) loads: where /proc cannot tell this process's
# age, the time since this moment is the closest lower bound on it (lifecycle._seconds_since_exec).
LOADED_AT = time.monotonic()

from sparkctl.emulator.lifecycle import main  # noqa: E402 (after the timestamp, on purpose)

__all__ = ["LOADED_AT", "main"]
