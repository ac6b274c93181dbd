"""The baseline for cold starts: a 1-second health-polling waiter, like the reference stack's
waker. Told that a request arrived, it starts the unit without waiting for the job
(`systemctl start --no-block`, its `docker start`), sleeps 0.3 s as the waker does after starting,
then GETs the engine's /health once a second until it answers 200, and forwards the request."""

from __future__ import annotations

import http.client
import time

from sparkctl.units.names import service_name

from .loadgen import Timed, timed_request
from .stack import Stack

POST_START_SLEEP = 0.3
POLL_INTERVAL = 1.0


def health(port: int) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def cold_request(stack: Stack, model: str, request: bytes) -> tuple[Timed, int]:
    """The request's timing as the waiter's client sees it, and how many polls it took."""
    assert stack.box is not None
    port = stack.engine_port(model)
    sent_wall, sent = time.time(), time.monotonic()
    stack.box.systemctl("start", "--no-block", service_name(model))
    time.sleep(POST_START_SLEEP)
    polls = 1
    while health(port) != 200:
        time.sleep(POLL_INTERVAL)
        polls += 1
    answer = timed_request(port, request)
    return Timed(sent_wall, sent, answer.first_byte, answer.status, answer.body), polls
