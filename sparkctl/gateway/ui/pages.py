"""`GET /` → `/ui/`, the page, and its assets; and the headers every dashboard answer carries.

The page holds no data (it asks the live feed once it runs), so it and its assets are served
without a key; everything they show comes through the authenticated routes.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web

from sparkctl.errors import NotFoundError

UI = "/ui/"
ASSETS = "/ui/assets/"
# Only our own files, and no inline script or style at all: text from catalogs, engines and logs
# that slipped past the escaping still could not run.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The page and its assets change with the daemon's version: always revalidate.
    "Cache-Control": "no-cache",
}
# The files a browser may ask for, and what they are. A name not listed is a 404, whatever lies
# beside them in the package.
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_CACHE = web.AppKey("ui_assets", dict[str, bytes])


def secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


async def root(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": UI})


async def page(request: web.Request) -> web.Response:
    return await _serve(request, "index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "index.html" or name not in CONTENT_TYPES:
        raise NotFoundError(f"No dashboard asset {name!r}.")
    return await _serve(request, name)


async def _serve(request: web.Request, name: str) -> web.Response:
    cache = request.app[_CACHE]
    body = cache.get(name)
    if body is None:  # read once, off the event loop; the package does not change under us
        body = cache[name] = await asyncio.to_thread(_read, name)
    response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[name]})
    secured(response)
    return response


def _read(name: str) -> bytes:
    return resources.files("sparkctl.gateway.ui").joinpath("assets", name).read_bytes()


def register(app: web.Application) -> None:
    app[_CACHE] = {}
    app.router.add_get("/", root)
    app.router.add_get(UI, page)
    app.router.add_get(ASSETS + "{name}", asset)
