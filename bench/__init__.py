"""sparkctl's benchmark suite: `python -m bench [--quick] [--out DIR]` (docs/performance.md).

It runs sparkctl as its real daemon over a real sandboxed systemd and measures it side by side
with direct access to the engine, nginx, a naive aiohttp proxy and vllm-router, in one invocation, with
interleaved rounds. It reports what it measures and never asserts on a timing.
"""
