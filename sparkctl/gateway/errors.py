"""The one place where errors become HTTP: status, OpenAI error type and code (BRIEF §4.5).

Every error response of the gateway — its own, and the engines' passed through — has the shape
`{"error": {"message", "type", "param", "code"}}`, with Retry-After where a retry makes sense.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from ..errors import RetryableError, SparkError

# code → (HTTP status, OpenAI error type)
STATUS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "invalid_request_error"),
    "missing_model": (400, "invalid_request_error"),
    "invalid_model_name": (400, "invalid_request_error"),
    "model_disabled": (400, "invalid_request_error"),
    "context_length_exceeded": (400, "invalid_request_error"),
    "bad_request": (400, "invalid_request_error"),
    "unauthorized": (401, "authentication_error"),
    "forbidden": (403, "permission_error"),
    "model_not_found": (404, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "request_timeout": (408, "invalid_request_error"),
    "request_too_large": (413, "invalid_request_error"),
    "queue_full": (429, "rate_limit_error"),
    "upstream_error": (502, "server_error"),
    "model_start_failed": (503, "server_error"),
    "model_backoff": (503, "server_error"),
    "model_loading": (503, "server_error"),
    "model_start_timeout": (504, "server_error"),
}
INTERNAL = (500, "server_error")


def status_of(code: str) -> tuple[int, str]:
    return STATUS.get(code, INTERNAL)


def envelope(message: str, code: str, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": status_of(code)[1], "param": param, "code": code}}


def error_body(error: SparkError) -> bytes:
    return json.dumps(envelope(error.message, error.code)).encode()


def retry_after(error: SparkError) -> str | None:
    if isinstance(error, RetryableError) and error.retry_after is not None:
        return str(max(1, math.ceil(error.retry_after)))
    return None


def error_response(error: SparkError, headers: dict[str, str] | None = None) -> web.Response:
    status, _ = status_of(error.code)
    out = dict(headers or {})
    if (ra := retry_after(error)) is not None:
        out["Retry-After"] = ra
    if error.code == "unauthorized":
        out["WWW-Authenticate"] = 'Bearer realm="sparkctl"'
    return web.Response(status=status, body=error_body(error), content_type="application/json", headers=out)


def sse_error_event(error: SparkError) -> bytes:
    """An error inside an already started event stream (headers are sent: status cannot change)."""
    return b"data: " + error_body(error) + b"\n\n"
