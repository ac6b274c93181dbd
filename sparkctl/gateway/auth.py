"""Who may call the gateway: API keys before anything is scheduled (BRIEF §2.4), on every port;
root (or the daemon's own user) on the local admin socket. (CORS: gateway/cors.py.)

With `gateway.auth = "none"` (loopback listeners only) no key is asked, so a request must also
look like it comes from this machine's own programs (#13): a loopback `Host` (a foreign one is DNS
rebinding), no foreign `Origin` (a web page in the owner's browser), and a JSON body — the kind a
cross-site form cannot send without a preflight. Multipart (audio uploads) is accepted only
without an `Origin`, that is, not from a browser.

The dashboard (#17) signs in once with a key and then presents a session cookie
(gateway/sessions.py) in its place; a request that changes something with a cookie must come from
the dashboard's own origin. Its page and assets hold no data and ask no key; the login checks the
key itself.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from sparkctl.apikeys import presented_key
from sparkctl.errors import ForbiddenError, UnauthorizedError, UnsupportedMediaTypeError
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.cors import OriginMatcher
from sparkctl.gateway.holds import HOLD
from sparkctl.gateway.sessions import CALLER, COOKIE, SAFE_METHODS, same_origin
from sparkctl.settings import is_loopback

OPEN_PATHS = frozenset({"/health", "/healthz", "/openapi.json", "/", "/ui/"})
UI_ASSETS = "/ui/assets/"
# Signing in and out of the dashboard check the key (or the cookie) and the origin themselves
# (gateway/ui/login.py); asking who one is goes through the door like any other request.
UI_SESSION = "/ui/api/session"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No request reaches the scheduler without a valid key (BRIEF §2.4), on any port."""
    gw = request.app[GATEWAY]
    path = request.path
    if request.method == "OPTIONS" or path in OPEN_PATHS or path.startswith(UI_ASSETS):
        return await handler(request)
    if path == UI_SESSION and request.method in ("POST", "DELETE"):
        return await handler(request)
    if path == "/metrics" and gw.settings.gateway.open_metrics and _local_client(request):
        return await handler(request)
    if _unix_peer_uid(request) in (0, os.getuid()):
        return await handler(request)  # root (or the daemon's own user) on the local admin socket
    if gw.keys is None:
        _local_only(request, OriginMatcher(gw.settings.gateway.cors_origins))
    else:
        presented = presented_key(request.headers)
        if presented is None and (token := request.cookies.get(COOKIE)):
            entry = gw.sessions.entry(token, gw.keys.store)
            if entry is not None and request.method not in SAFE_METHODS:
                same_origin(request)  # a cookie rides along on a foreign page's request too
        else:
            entry = gw.keys.authenticate(presented)
        if entry is None:
            raise UnauthorizedError("Missing or invalid API key: send `Authorization: Bearer <key>`.")
        admin = path.startswith("/api/")
        if admin and not entry.admin:
            raise ForbiddenError(f"The key '{entry.name}' may not use the admin API.")
        request[CALLER] = entry
        with gw.holds.hold(entry, admin=admin) as held:  # until revoking the key ends it
            request[HOLD] = held
            return await handler(request)
    return await handler(request)


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


_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _local_client(request: web.Request) -> bool:
    """A program on this machine, asking for this machine: a loopback peer that names a loopback
    Host (a rebound DNS name does not) and came through no reverse proxy (a local proxy makes a
    remote client look local; proxies say so in these headers)."""
    return (
        _loopback(request.remote)
        and _is_loopback_host(request.headers.get("Host", ""))
        and not any(h in request.headers for h in _PROXY_HEADERS)
    )


def _local_only(request: web.Request, allowed: OriginMatcher) -> None:
    """`auth = "none"`: refuse what a web page or a rebound DNS name could send."""
    host = request.headers.get("Host", "")
    if not _is_loopback_host(host):
        raise ForbiddenError(
            f'Host {host!r} is not this machine\'s loopback; with gateway.auth = "none" only local '
            "clients are served (a foreign Host is how DNS rebinding reaches a local port)."
        )
    origin = request.headers.get("Origin")
    if origin is not None and not allowed(origin) and not _is_loopback_host(urlsplit(origin).netloc):
        raise ForbiddenError(f"The origin {origin!r} may not call this API (gateway.cors_origins).")
    if request.method == "POST" and not _json_or_none(request, browser=origin is not None):
        raise UnsupportedMediaTypeError(
            f"Content-Type {request.headers.get('Content-Type')!r} is refused with gateway.auth = "
            '"none": send application/json.'
        )


def _is_loopback_host(host: str) -> bool:
    """A Host header (or an origin's netloc) naming this machine's loopback, any port."""
    name = host.rsplit("@", 1)[-1]
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return bool(name) and is_loopback(name.lower())


def _json_or_none(request: web.Request, *, browser: bool) -> bool:
    ctype = request.headers.get("Content-Type")
    if ctype is None:
        return not request.body_exists  # a POST with no body (the admin API's start and stop)
    kind = ctype.split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return True
    return kind == "multipart/form-data" and not browser
