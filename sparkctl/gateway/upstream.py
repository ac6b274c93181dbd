"""Talking to an engine: the request that goes up, and the response that comes back down.

Bodies go up byte-exact unless sparkctl must change them (an alias becomes the id, the model's
`[request]` shaping applies). Responses come down as they arrive: each chunk of an event stream
is written to the client the moment the engine sends it, and `write` waits while the client is
slow, so backpressure holds both ways. An engine that dies mid-stream ends the client's stream
with an error event at once; an engine's own error becomes sparkctl's error envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from sparkctl.errors import BadRequestError, ContextLengthExceededError, SparkError, UpstreamError
from sparkctl.gateway.errors import error_body

# Headers that describe one connection, not the message (RFC 9110 §7.6.1), and those sparkctl
# replaces: the client's credentials never reach an engine, lengths are recomputed.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
# The body goes up decompressed (gateway/bodies.py): its old Content-Encoding would be a lie.
NOT_UPSTREAM = HOP_BY_HOP | {"authorization", "x-api-key", "cookie", "content-encoding"}
NOT_DOWNSTREAM = HOP_BY_HOP | {"server", "date"}
# vLLM's words for a prompt too long: chat ("maximum context length"), Responses ("exceeds the
# max_model_len"), and other engines'.
_CONTEXT = re.compile(
    r"maximum context length|context length|max_model_len|too many tokens|prompt is too long", re.I
)


# The same sets as the raw bytes aiohttp's parser hands over, lower case. The client's own
# X-Request-Id and X-Forwarded-For are replaced (the first) and extended (the second); Expect is
# the client's business with the gateway, which has read the whole body before anything goes up.
_NOT_UP = frozenset(h.encode() for h in NOT_UPSTREAM | {"x-request-id", "x-forwarded-for", "expect"})
_NOT_DOWN = frozenset(h.encode() for h in NOT_DOWNSTREAM | {"x-request-id"})


def request_head(
    method: str,
    target: str,
    port: int,
    raw_headers: Iterable[tuple[bytes, bytes]],
    length: int,
    request_id: str,
    peer: str | None,
    engine_auth: str | None = None,
) -> bytes:
    """The request line and headers the engine gets, as one block of bytes: the client's headers
    as they came (aiohttp's parser has refused any with CR or LF), less the hop-by-hop ones and its
    credentials, which the engine key's replace (`engine_auth`, "Bearer …", when engines take one).
    `target` is the path and query as the client sent them, which the parser has checked too."""
    parts = [f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()]
    prior = b""
    for key, value in raw_headers:
        lower = key.lower()
        if lower in _NOT_UP:
            if lower == b"x-forwarded-for":
                prior = value
            continue
        parts += (key, b": ", value, b"\r\n")
    if engine_auth is not None:
        parts.append(f"Authorization: {engine_auth}\r\n".encode())
    tail = f"X-Request-Id: {request_id}\r\n"
    if peer:
        chain = f"{prior.decode('latin-1')}, {peer}" if prior else peer
        tail += f"X-Forwarded-For: {chain}\r\n"
    parts.append(f"{tail}Content-Length: {length}\r\n\r\n".encode())
    return b"".join(parts)


def response_headers(raw: list[tuple[bytes, bytes]], request_id: str) -> CIMultiDict[str]:
    """The engine's answer's headers as the client gets them, with the request's id."""
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in raw:
        if key.lower() not in _NOT_DOWN:
            out.add(key.decode("latin-1"), value.decode("latin-1"))
    out["X-Request-Id"] = request_id
    return out


def upstream_headers(
    headers: Mapping[str, str], request_id: str, peer: str | None, engine_auth: str | None = None
) -> CIMultiDict[str]:
    """The client's headers as a peer node gets them (the cluster's relay, over aiohttp's client;
    engines get `request_head`'s bytes): its credentials replaced by `engine_auth` ("Bearer …"),
    and no Expect (the whole body was read here)."""
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in NOT_UPSTREAM and key.lower() not in ("expect", "x-request-id"):
            out.add(key, value)
    if engine_auth is not None:
        out["Authorization"] = engine_auth
    out["X-Request-Id"] = request_id
    if peer:
        prior = headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    return out


def downstream_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in NOT_DOWNSTREAM:
            out.add(key, value)
    return out


def engine_error(status: int, body: bytes) -> tuple[int, bytes, SparkError]:
    """An engine's non-2xx answer as sparkctl's envelope: (status, body, error)."""
    message = _engine_message(body) or f"The engine answered HTTP {status}."
    error: SparkError
    if status == 400 and _CONTEXT.search(message):
        error = ContextLengthExceededError(message)
        return 400, error_body(error), error
    if 400 <= status < 500:
        # The engine's own status stands (404 for a route it lacks, 422 …), in sparkctl's envelope.
        error = BadRequestError(message)
        return status, error_body(error), error
    error = UpstreamError(f"The engine failed (HTTP {status}): {message}")
    return 502, error_body(error), error


def _engine_message(body: bytes) -> str | None:
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return None


def replace_multipart_field(body: bytes, content_type: str, field: str, value: str) -> bytes:
    """Set a form field's value, leaving every other byte of the form (the audio) as it was."""
    boundary = _boundary(content_type)
    if boundary is None:
        return body
    delimiter = b"--" + boundary
    parts = body.split(delimiter)
    for i, part in enumerate(parts):
        head, sep, rest = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = head.lower()
        if b"content-disposition" in disposition and re.search(
            rb'name="?' + re.escape(field.encode()) + rb'"?(;|\r\n|$)', disposition
        ):
            trailer = b"\r\n" if rest.endswith(b"\r\n") else b""
            parts[i] = head + sep + value.encode() + trailer
            return delimiter.join(parts)
    return body


def _boundary(content_type: str) -> bytes | None:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    return m.group(1).encode() if m else None
