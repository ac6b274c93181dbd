"""`/ui/api/session`: sign in with a key (POST), sign out (DELETE), and who one is (GET).

Signing in checks the key where every request's key is checked (the key file's `authenticate`)
and exchanges it for a session cookie (gateway/sessions.py); from then on the auth middleware
takes the cookie in the key's place. With `gateway.auth = "none"` there is nothing to sign in to:
the page opens at once, for local clients only (the middleware's rules).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sparkctl.errors import BadRequestError, InvalidJSONError, UnauthorizedError
from sparkctl.gateway.context import GATEWAY
from sparkctl.gateway.sessions import CALLER, COOKIE, clear_cookie, same_origin, set_cookie
from sparkctl.gateway.ui.pages import secured

SESSION = "/ui/api/session"
MAX_KEY = 512  # far beyond a real key (52 characters); a longer one is not worth hashing


def _who(request: web.Request, *, name: str | None, admin: bool) -> web.Response:
    auth = request.app[GATEWAY].settings.gateway.auth
    response = web.json_response({"auth": auth, "name": name, "admin": admin})
    secured(response)
    return response


async def whoami(request: web.Request) -> web.Response:
    """Who the middleware let in: a key's name and scope; anyone local under `auth = "none"`, and
    root on the local admin socket, may do everything."""
    entry = request.get(CALLER)
    if entry is None:
        return _who(request, name=None, admin=True)
    return _who(request, name=entry.name, admin=entry.admin)


async def sign_in(request: web.Request) -> web.Response:
    same_origin(request)  # or a foreign page could sign the browser in to a key of its choosing
    gw = request.app[GATEWAY]
    if gw.keys is None:
        return _who(request, name=None, admin=True)
    key = _key_of(await request.read())
    entry = gw.keys.authenticate(key)
    if entry is None:
        raise UnauthorizedError("That is not a valid API key (`sparkctl keys add NAME` makes one).")
    gw.sessions.close(request.cookies.get(COOKIE))  # a fresh token at each sign-in
    response = _who(request, name=entry.name, admin=entry.admin)
    set_cookie(request, response, gw.sessions.open(entry))
    return response


async def sign_out(request: web.Request) -> web.Response:
    same_origin(request)
    request.app[GATEWAY].sessions.close(request.cookies.get(COOKIE))
    response = web.Response(status=204)
    clear_cookie(response)
    secured(response)
    return response


def _key_of(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJSONError('Send {"key": "sk-spark-…"} as JSON.') from None
    key = data.get("key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise BadRequestError('Send {"key": "sk-spark-…"}: the API key, as a string.')
    return key


def register(app: web.Application) -> None:
    app.router.add_get(SESSION, whoami)
    app.router.add_post(SESSION, sign_in)
    app.router.add_delete(SESSION, sign_out)
