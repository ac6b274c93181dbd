"""CORS for browser origins (`gateway.cors_origins`).

An entry is an exact origin (`http://localhost:3000`), `"*"` (any origin, which you rarely want),
a pattern whose `*` stands for one or more characters other than `/` (`http://localhost:*`: any
port; `vscode-webview://*`: any VS Code webview), or `"local"`, the set the reference stack
allowed: localhost and 127.0.0.1 on any port, and VS Code webviews (Cline, Continue).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sparkctl.errors import ForbiddenError

CORS_HEADERS = "Authorization, Content-Type, X-Api-Key, X-Request-Id, Prefer, OpenAI-Beta, Anthropic-Version"
LOCAL = (
    "http://localhost",
    "http://localhost:*",
    "http://127.0.0.1",
    "http://127.0.0.1:*",
    "vscode-webview://*",
)


class OriginMatcher:
    """Whether an `Origin` header is one of the configured entries."""

    def __init__(self, entries: Iterable[str]) -> None:
        expanded = [e for entry in entries for e in (LOCAL if entry == "local" else (entry,))]
        self.any = "*" in expanded
        self._exact = frozenset(e for e in expanded if "*" not in e)
        patterns = [re.escape(e).replace(r"\*", "[^/]+") for e in expanded if "*" in e and e != "*"]
        self._pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def __bool__(self) -> bool:
        return self.any or bool(self._exact) or self._pattern is not None

    def __call__(self, origin: str) -> bool:
        if self.any or origin in self._exact:
            return True
        return self._pattern is not None and self._pattern.fullmatch(origin) is not None


def cors_middleware(allowed: OriginMatcher) -> Middleware:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and allowed(origin)
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            if not ok:
                raise ForbiddenError(f"The origin {origin!r} may not call this API (gateway.cors_origins).")
            return web.Response(status=204, headers=_cors_headers(origin, preflight=True))
        response = await handler(request)
        if ok and not response.prepared:
            response.headers.update(_cors_headers(origin))
        return response

    return cors


def _cors_headers(origin: str | None, *, preflight: bool = False) -> dict[str, str]:
    headers = {
        "Access-Control-Allow-Origin": origin or "",
        "Vary": "Origin",
        "Access-Control-Expose-Headers": "Retry-After, X-Request-Id",
    }
    if preflight:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600",
            }
        )
    return headers
