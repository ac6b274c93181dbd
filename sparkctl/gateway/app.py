"""The aiohttp gateway: sparkctl's OpenAI-compatible front door (BRIEF §4.5).

`build_app` assembles it: every route registered in one place, three middlewares (the error
envelope, authentication before anything is scheduled, CORS), and the engines' client session in a
cleanup context.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sparkctl.apikeys import KeyFile, presented_key
from sparkctl.catalog import Catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.errors import ForbiddenError, RequestTooLargeError, SparkError, UnauthorizedError
from sparkctl.gateway import admin, openai, proxy
from sparkctl.gateway.context import GATEWAY, AccessLog, ConsoleAccessLog, Gateway
from sparkctl.gateway.errors import error_response, http_error_response
from sparkctl.gateway.metrics import Metrics
from sparkctl.settings import Settings

log = logging.getLogger("sparkctl.gateway")
OPEN_PATHS = frozenset({"/health"})
CORS_HEADERS = "Authorization, Content-Type, X-Api-Key, X-Request-Id, Prefer, OpenAI-Beta, Anthropic-Version"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the one OpenAI envelope, whatever raised it."""
    try:
        return await handler(request)
    except SparkError as e:
        return error_response(e)
    except web.HTTPRequestEntityTooLarge:
        return error_response(RequestTooLargeError("The request body is too large."))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return http_error_response(request, e)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No request reaches the scheduler without a valid key (BRIEF §2.4), on any port."""
    gw = request.app[GATEWAY]
    path = request.path
    if request.method == "OPTIONS" or path in OPEN_PATHS:
        return await handler(request)
    if path == "/metrics" and _loopback(request.remote):
        return await handler(request)
    if _unix_peer_uid(request) in (0, os.getuid()):
        return await handler(request)  # root (or the daemon's own user) on the local admin socket
    if gw.keys is not None:
        entry = gw.keys.authenticate(presented_key(request.headers))
        if entry is None:
            raise UnauthorizedError("Missing or invalid API key: send `Authorization: Bearer <key>`.")
        if path.startswith("/api/") and not entry.admin:
            raise ForbiddenError(f"The key '{entry.name}' may not use the admin API.")
    return await handler(request)


def cors_middleware(origins: list[str]) -> Middleware:
    allow_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (allow_any or origin in origins)
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            if not allowed:
                raise web.HTTPForbidden(reason="Origin not allowed")
            return web.Response(status=204, headers=_cors_headers(origin, preflight=True))
        response = await handler(request)
        if allowed and not response.prepared:
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


def _unix_peer_uid(request: web.Request) -> int | None:
    """The uid of the process on the other end of a unix socket (SO_PEERCRED), else None."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def build_app(
    settings: Settings,
    catalog: Catalog,
    supervisor: Supervisor,
    *,
    keys: KeyFile | None = None,
    direct_ports: dict[int, str] | None = None,
    access: AccessLog | None = None,
) -> web.Application:
    """The gateway application. `keys` is required unless gateway.auth = "none"."""
    if settings.gateway.auth == "required" and keys is None:
        keys = KeyFile(settings.gateway.api_keys_file)
    gateway = Gateway(
        settings=settings,
        catalog=catalog,
        supervisor=supervisor,
        keys=keys if settings.gateway.auth == "required" else None,
        metrics=Metrics(supervisor),
        direct_ports=dict(direct_ports or {}),
        access=access or ConsoleAccessLog(),
    )
    middlewares: list[Middleware] = [errors_middleware]
    if settings.gateway.cors_origins:
        middlewares.append(cors_middleware(list(settings.gateway.cors_origins)))
    middlewares.append(auth_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.gateway.max_body)
    app[GATEWAY] = gateway
    openai.register(app)
    admin.register(app)
    proxy.register(app)
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_watch_keys)
    return app


async def _watch_keys(app: web.Application) -> AsyncIterator[None]:
    """Follow the key file from a worker thread while the gateway serves."""
    keys = app[GATEWAY].keys
    watcher = asyncio.create_task(keys.watch(), name="sparkctl-keys") if keys is not None else None
    yield
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled session to every engine: kept-alive connections, no limit of its own (the
    scheduler and the engines bound concurrency), no timeout on reads (generation takes as long
    as it takes; a dead engine is noticed by the supervisor, which aborts the lease)."""
    gw = app[GATEWAY]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
    gw.session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=None),
    )
    yield
    await gw.session.close()
