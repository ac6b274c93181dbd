"""How right the ETA is: the estimate a waiting stream hears in its first keep-alive comment
(`: sparkctl: waiting for ID (STATE, eta=Ss)`, BRIEF §9) against the wait that followed.

Three exclusive models, each with a typical load time of its own drawn at random, and every
start's actual load time drawn around it (±JITTER), so the daemon learns from noisy starts as on
a Spark. Rounds interleave cold starts (nothing runs), swaps (another model runs: it is stopped
first, which the estimate must count) and requests behind a swap (a second model asked for while
the first is on its way: it waits for that start, the first's request and its stop). A round's
error is (the comment's arrival + its eta) − the first chunk's arrival, in seconds; the report
gives the median absolute error, its bias (the signed median), and apart from those the first
start of each model, whose estimate is a guess from its size on disk (no history yet).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import MESSAGES, Context

MODELS = ("eta-a", "eta-b", "eta-c")
JITTER = 0.15  # a start's load time: its model's typical one ±15 %
COMMENT = re.compile(rb": sparkctl: waiting for [^ ]+ \(([a-z]+)(?:, \d+ ahead)?, eta=(\d+)s\)")


def typical_loads(ctx: Context, rng: random.Random) -> dict[str, float]:
    """Each model's typical load time: long enough beside the comment's whole seconds."""
    lo, hi = ctx.profile.load_time
    return {m: rng.uniform(4 * lo, 8 * hi) for m in MODELS}


def _stream(ctx: Context, model: str) -> dict[str, Any]:
    """One streamed request: when its first keep-alive comment came and what it said, and when
    its first chunk came (seconds from the request)."""
    body = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 2, "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", ctx.stack.port, timeout=300)
    try:
        sent = time.monotonic()
        conn.request(
            "POST", "/v1/chat/completions", body, {**ctx.stack.auth, "Content-Type": "application/json"}
        )
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{model}: HTTP {response.status}: {response.read()[:300]!r}")
        heard: tuple[float, str, int] | None = None
        # Raw lines (chunk sizes among them, which match neither pattern); the connection is
        # closed at the first chunk, which is all that is measured.
        while line := response.fp.readline():
            if heard is None and (match := COMMENT.match(line.strip())):
                heard = (time.monotonic() - sent, match.group(1).decode(), int(match.group(2)))
            elif line.startswith(b"data:"):
                first = time.monotonic() - sent
                break
        else:
            raise RuntimeError(f"{model}: the stream ended without a chunk")
    finally:
        conn.close()
    if heard is None:
        raise RuntimeError(f"{model}: no keep-alive comment with an eta while it waited {first:.1f}s")
    at, state, eta = heard
    return {
        "comment_at_s": at,
        "state": state,
        "eta_s": eta,
        "first_chunk_s": first,
        "error_s": at + eta - first,
    }


def run(ctx: Context) -> dict[str, Any]:
    stack = ctx.stack
    rng = random.Random(20261205)
    typical = typical_loads(ctx, rng)
    for model in MODELS:
        if stack.unit_active(model) != "inactive":
            stack.stop_model(model)
    seen: set[str] = set()
    running: str | None = None
    runs: list[dict[str, Any]] = []
    for i in range(ctx.profile.eta_runs):
        roll = rng.random()
        if running is not None and roll < 0.3:
            stack.stop_model(running)
            running = None
        # Some rounds put a second request behind the first: its model waits for the first's
        # swap, its requests and its stop (the line the estimate walks).
        behind = running is not None and roll > 0.75
        model = rng.choice([m for m in MODELS if m != running])
        second = rng.choice([m for m in MODELS if m not in (running, model)]) if behind else None
        loads = {}
        for m in (model, second):
            if m is not None:
                loads[m] = typical[m] * rng.uniform(1 - JITTER, 1 + JITTER)
                stack.set_load_time(m, loads[m])
        time.sleep(0.3)
        kind = "cold" if running is None else "swap"
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_stream, ctx, model)
            later = None
            if second is not None:
                time.sleep(0.5)  # the first is the swap's target by now
                later = pool.submit(_stream, ctx, second)
            results = [(model, kind, first.result())]
            if later is not None and second is not None:
                results.append((second, "behind", later.result()))
        for m, k, measured in results:
            runs.append(
                {
                    "run": i,
                    "model": m,
                    "kind": k,
                    "load_time_s": loads[m],
                    "first_start": m not in seen,
                    **measured,
                }
            )
            seen.add(m)
        running = second or model
    if running is not None:
        stack.stop_model(running)
    return {
        "typical_load_s": typical,
        "jitter": JITTER,
        "runs": runs,
        "summary": summary(runs),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def errors(rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            return {"n": 0}
        errs = [r["error_s"] for r in rows]
        waits = [r["first_chunk_s"] for r in rows]
        return {
            "n": len(rows),
            "median_abs_error_s": statistics.median(abs(e) for e in errs),
            "median_error_s": statistics.median(errs),  # > 0: the estimate ran long
            "median_abs_error_pct": statistics.median(
                100 * abs(e) / w for e, w in zip(errs, waits, strict=True)
            ),
            "median_wait_s": statistics.median(waits),
        }

    learned = [r for r in runs if not r["first_start"]]
    return {
        "learned": errors(learned),
        "learned_cold": errors([r for r in learned if r["kind"] == "cold"]),
        "learned_swap": errors([r for r in learned if r["kind"] == "swap"]),
        "learned_behind": errors([r for r in learned if r["kind"] == "behind"]),
        "guess": errors([r for r in runs if r["first_start"]]),
    }
