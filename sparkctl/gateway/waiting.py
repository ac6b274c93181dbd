"""A request's way to its model's lease, the same on both serving paths (proxy.py on aiohttp's
server, express.py on the wire): its id, the bytes the engine gets, how long it may wait for its
model and what a waiting stream is told meanwhile."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from sparkctl.catalog import Model
from sparkctl.core.lease import Lease
from sparkctl.core.states import ModelState
from sparkctl.errors import ModelStartTimeoutError, SparkError
from sparkctl.gateway.context import Gateway
from sparkctl.gateway.shaping import shape
from sparkctl.gateway.upstream import replace_multipart_field

KEEPALIVE_AFTER = 0.25  # a streaming request that waits longer gets SSE comments …
KEEPALIVE_EVERY = 5.0  # … this often, until its model is ready
# What the access log and the metrics say of a request whose client hung up before its answer
# was whole (nginx's "client closed request"): not a 500, which would be the server's failure.
CLIENT_CLOSED = 499

# A request's id when the client gave none: unique within this daemon's life and apart from other
# runs', without a getrandom() call per request (#18). It names a request in logs; it is no secret.
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def prefers_no_wait(prefer: str) -> bool:
    """Whether a `Prefer` header's value asks not to wait for a loading model (`wait=0`)."""
    return any(p.strip().replace(" ", "") == "wait=0" for p in prefer.split(","))


def request_id(given: str) -> str:
    """The client's X-Request-Id when it is a sane one (at most 64 letters, digits, - and _), else
    a new one."""
    if 0 < len(given) <= 64 and given.isascii() and given.replace("-", "").replace("_", "").isalnum():
        return given
    return f"{_ID_PREFIX}{next(_ids) & 0xFFFFFFFF:08x}"


def prepared(
    body: bytes, data: dict[str, Any] | None, name: str | None, model: Model, route: str, content_type: str
) -> bytes:
    """The bytes the engine gets: the client's own, unless the name or the shaping changes them."""
    if data is not None:
        shaped = shape(data, model.spec.request, route)
        if shaped is data and data.get("model") == model.id:
            return body
        if shaped is data:
            shaped = dict(data)
        shaped["model"] = model.id
        return json.dumps(shaped, ensure_ascii=False, separators=(",", ":")).encode()
    if name is not None and name != model.id:
        return replace_multipart_field(body, content_type, "model", model.id)
    return body


def wait_bound(gw: Gateway, model: Model) -> float:
    """How long a request may wait for its model: a swap's drain and stop, the memory gate and the
    start."""
    s = gw.settings.scheduler
    return s.drain_timeout + gw.longest_stop + s.memory_wait + model.spec.serve.start_timeout + 30


def waited_too_long(model: Model) -> SparkError:
    return ModelStartTimeoutError(f"The model '{model.id}' was not ready in time.", retry_after=30)


async def acquire_within(gw: Gateway, model: Model, wait: bool, bound: float) -> Lease:
    """The lease, or TimeoutError after `bound` seconds. Awaited directly: if the client goes away
    meanwhile, the cancellation reaches the supervisor's acquire, which gives back a lease granted
    at that very moment. A timer and a flag, as asyncio.timeout does it, without its object and
    context manager on every request (#18)."""
    task = asyncio.current_task()
    assert task is not None
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(bound, expire)
    try:
        return await gw.supervisor.acquire(model.id, wait=wait)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()


def waiting_comment(gw: Gateway, model: Model) -> bytes:
    """The keep-alive comment of a waiting stream (BRIEF §9): `: sparkctl: waiting for ID (STATE[,
    N ahead][, eta=Ss])`. A model that is down while its request waits in line is `queued`. The
    estimate counts what stands before the model and its load time (learned over its starts, or
    before any, guessed from its size on disk), and is taken afresh for every comment."""
    state = gw.supervisor.view(model.id).state
    shown = "queued" if state in (ModelState.STOPPED, ModelState.FAILED) else state.value
    ahead = gw.supervisor.ahead_of(model.id)
    more = f", {ahead} ahead" if ahead else ""
    if state is not ModelState.READY and (eta := gw.supervisor.eta(model.id)) is not None:
        more += f", eta={eta.seconds:.0f}s"
    return f": sparkctl: waiting for {model.id} ({shown}{more})\n\n".encode()
