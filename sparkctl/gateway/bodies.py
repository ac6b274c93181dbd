"""Request bodies: read within the size and time limits, decompressed here and only here, and
counted against one budget for every byte the gateway holds (#13 finding 6).

aiohttp would inflate a gzip body as it arrives, before any middleware ran: a megabyte of gzip
sent without a key cost seconds of CPU and stalled the loop, and the inflated bytes then went to
the engine still labelled `Content-Encoding: gzip`. The gateway's server leaves bodies as they
come (`auto_decompress` off, in app.py); a route inflates one after authentication, within
`gateway.max_body`, in a worker thread, and the engine always gets plain bytes. Encodings other
than gzip and deflate are refused with 415.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from sparkctl.errors import (
    InvalidJSONError,
    QueueFullError,
    RequestTimeoutError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)

# zlib's window bits: gzip framing, zlib framing (what HTTP calls deflate)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: web.Request, limit: int, within: float) -> bytes:
    """The body as it came. Refused from Content-Length before a byte is read (BRIEF §4.5); a
    chunked body is cut off by aiohttp's client_max_size, which the app sets to the same limit."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(f"The request body ({length} bytes) exceeds the limit of {limit} bytes.")
    try:
        if request.content.is_eof():
            # All of it has come (a small body arrives with its headers): no deadline to arm.
            return await request.read()
        async with asyncio.timeout(within):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLargeError(f"The request body exceeds the limit of {limit} bytes.") from None
    except TimeoutError:
        raise RequestTimeoutError(f"The request body did not arrive within {within:g}s.") from None


async def decoded(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone, never larger than `limit`."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {content_encoding!r} is not accepted: send gzip, deflate or none."
        )
    return await asyncio.to_thread(_inflate, body, wbits, limit)


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)  # one byte more tells "over the limit"
    except zlib.error as e:
        raise InvalidJSONError(f"The request body could not be decompressed: {e}") from None
    if len(out) > limit:
        raise RequestTooLargeError(f"The decompressed request body exceeds the limit of {limit} bytes.")
    if not inflater.eof:
        raise InvalidJSONError("The compressed request body is truncated.")
    return out


class BodyBudget:
    """The bytes of request bodies the gateway holds at once, all requests together: beyond
    `limit` a new request is refused (429) rather than let queued bodies exhaust memory. One body
    alone always fits (max_body bounds it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        self.take(size)
        try:
            yield
        finally:
            self.held -= size

    def take(self, size: int) -> None:
        """`hold` without its context manager: the caller gives the bytes back (`held -= size`)."""
        if self.held and self.held + size > self.limit:
            raise QueueFullError(
                f"The gateway holds {self.held} bytes of request bodies (gateway.body_budget = "
                f"{self.limit}); try again shortly.",
                retry_after=1,
            )
        self.held += size
