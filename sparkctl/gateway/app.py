"""The aiohttp gateway: sparkctl's OpenAI-compatible front door (BRIEF §4.5).

`build_app` assembles it: every route registered in one place, three middlewares (the error
envelope, authentication before anything is scheduled, CORS), and the engines' connections in a
cleanup context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sparkctl.apikeys import KeyFile
from sparkctl.catalog import Catalog
from sparkctl.catalog.span import owners
from sparkctl.core.supervisor import Supervisor
from sparkctl.errors import RequestTooLargeError, SparkError
from sparkctl.gateway import admin, openai, openapi, proxy, pulls, span, ui
from sparkctl.gateway.auth import auth_middleware
from sparkctl.gateway.bodies import BodyBudget
from sparkctl.gateway.context import GATEWAY, AccessLog, ConsoleAccessLog, Gateway
from sparkctl.gateway.cors import OriginMatcher, cors_middleware
from sparkctl.gateway.errors import error_response, http_error_response
from sparkctl.gateway.metrics import Metrics
from sparkctl.gateway.peers import Peer, Peers
from sparkctl.settings import Settings

log = logging.getLogger("sparkctl.gateway")


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


def build_app(
    settings: Settings,
    catalog: Catalog,
    supervisor: Supervisor,
    *,
    keys: KeyFile | None = None,
    direct_ports: dict[int, str] | None = None,
    access: AccessLog | None = None,
    engine_key: str | None = None,
    peers: list[Peer] | None = None,
) -> web.Application:
    """The gateway application. `keys` is required unless gateway.auth = "none"; `peers` (with
    their keys, `peers.read_peers`) when [cluster] names any."""
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
        bodies=BodyBudget(settings.gateway.body_budget),
        engine_auth=f"Bearer {engine_key}" if engine_key else None,
        peers=Peers(settings.cluster.node, peers, settings.cluster) if peers else None,
        owners=owners([m.spec for m in catalog.enabled], settings.cluster),
    )
    if gateway.peers is not None:
        gateway.metrics.watch_peers(gateway.peers)
    middlewares: list[Middleware] = [errors_middleware]
    if allowed := OriginMatcher(settings.gateway.cors_origins):
        middlewares.append(cors_middleware(allowed))
    middlewares.append(auth_middleware)
    # Bodies stay as they come until a route, after authentication, decompresses them
    # (gateway/bodies.py): aiohttp's own decompression runs before any middleware.
    app = web.Application(
        middlewares=middlewares,
        client_max_size=settings.gateway.max_body,
        handler_args={"auto_decompress": False},
    )
    app[GATEWAY] = gateway
    openai.register(app)
    admin.register(app)
    span.register(app)
    pulls.register(app)
    proxy.register(app)
    openapi.register(app)
    ui.register(app)
    app.cleanup_ctx.append(_engines)
    app.cleanup_ctx.append(_watch_keys)
    app.cleanup_ctx.append(_poll_peers)
    return app


async def _poll_peers(app: web.Application) -> AsyncIterator[None]:
    """Ask the cluster's other nodes what they serve, from a task of its own, while the gateway
    serves (#15)."""
    peers = app[GATEWAY].peers
    if peers is None:
        yield
        return
    peers.open()
    poller = asyncio.create_task(peers.run(), name="sparkctl-peers")
    yield
    poller.cancel()
    await asyncio.gather(poller, return_exceptions=True)
    await peers.close()


async def _watch_keys(app: web.Application) -> AsyncIterator[None]:
    """Follow the key file from a worker thread while the gateway serves."""
    gw = app[GATEWAY]
    keys = gw.keys
    watcher = (
        asyncio.create_task(keys.watch(gw.holds.revoke), name="sparkctl-keys") if keys is not None else None
    )
    yield
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _engines(app: web.Application) -> AsyncIterator[None]:
    """Connections to the engines are opened as requests need them and kept warm between
    requests (gateway/engines.py); at shutdown every idle one is closed."""
    yield
    app[GATEWAY].engines.close()
