"""The one place where errors become HTTP: status, OpenAI error type and code (BRIEF §4.5), as
`ErrorCode` carries them.

Every error response of the gateway — its own, and the engines' passed through — has the shape
`{"error": {"message", "type", "param", "code"}}`, with Retry-After where a retry makes sense.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from sparkctl.errors import ErrorCode, RetryableError, SparkError


def envelope(message: str, code: ErrorCode, *, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": code.error_type, "param": param, "code": code.value}}


def error_body(error: SparkError) -> bytes:
    return json.dumps(envelope(error.message, error.code)).encode()


def retry_after(error: SparkError) -> str | None:
    if isinstance(error, RetryableError) and error.retry_after is not None:
        return str(max(1, math.ceil(error.retry_after)))
    return None


def error_response(error: SparkError, headers: dict[str, str] | None = None) -> web.Response:
    out = dict(headers or {})
    if (ra := retry_after(error)) is not None:
        out["Retry-After"] = ra
    if error.code is ErrorCode.UNAUTHORIZED:
        out["WWW-Authenticate"] = 'Bearer realm="sparkctl"'
    return web.Response(
        status=error.code.status, body=error_body(error), content_type="application/json", headers=out
    )


def http_error_response(request: web.Request, e: web.HTTPException) -> web.Response:
    """aiohttp's own 404/405/400 in the same envelope."""
    code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(e.status, ErrorCode.BAD_REQUEST)
    message = "No such route." if e.status == 404 else (e.reason or "Bad request.")
    if e.status == 405:
        message = f"{request.method} is not allowed on {request.path}."
    return web.json_response(
        envelope(message, code),
        status=e.status,
        headers={k: v for k, v in e.headers.items() if k.lower() == "allow"},
    )


def sse_error_event(error: SparkError) -> bytes:
    """An error inside an already started event stream (headers are sent: status cannot change)."""
    return b"data: " + error_body(error) + b"\n\n"
