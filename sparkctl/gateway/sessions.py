"""The dashboard's sessions (#17): an API key, presented once at the login, exchanged for a random
token in an HttpOnly, SameSite=Strict cookie, so the page's JavaScript never holds the key.

A session stands for its key, not for a copy of the key's rights: every use looks the key up in
the key file as it is now (by digest), so revoking the key, or taking its admin scope away, takes
effect on the session at the next request, as it does for the key itself. Sessions live in the
daemon's memory only: a restart signs everyone out, which costs a login and leaves nothing on disk.

A cookie rides along on any request the browser makes to this origin, so a request that changes
something on the strength of a cookie must show that it comes from this origin's own page
(`same_origin`): the login itself included, so a foreign page cannot sign a browser in to the
attacker's key either.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from sparkctl.apikeys import KeyEntry, KeyStore
from sparkctl.errors import ForbiddenError

COOKIE = "sparkctl_session"
# Absolute lifetime of a session, and how long one may go unused; a phone left on the couch for
# a weekend signs in again.
LIFETIME = 7 * 24 * 3600.0
IDLE = 24 * 3600.0
# Sessions are cheap, but a script logging in in a loop must not grow the daemon without bound:
# past this the least recently used one is forgotten.
MAX_SESSIONS = 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The key a request was let in with (by its own header or a session cookie), set by the auth
# middleware; absent with `gateway.auth = "none"` and on the local admin socket.
CALLER = web.RequestKey("caller", KeyEntry)


@dataclass(slots=True)
class Session:
    key_sha256: str  # the key it stands for, looked up afresh on every use
    created: float
    used: float


class Sessions:
    """token digest → session. Only digests of the tokens are kept, so a memory dump of the daemon
    holds nothing a browser could present."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_token)

    def open(self, entry: KeyEntry) -> str:
        """A new session for `entry`; the token for its cookie."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self._by_token[_digest(token)] = Session(entry.sha256, now, now)
        while len(self._by_token) > MAX_SESSIONS:
            self._by_token.popitem(last=False)
        return token

    def close(self, token: str | None) -> None:
        if token:
            self._by_token.pop(_digest(token), None)

    def entry(self, token: str | None, store: KeyStore) -> KeyEntry | None:
        """The key a session token stands for now, or None: unknown, expired, or its key is gone
        from the key file (then the session is forgotten too)."""
        if not token:
            return None
        digest = _digest(token)
        session = self._by_token.get(digest)
        if session is None:
            return None
        now = self._clock()
        entry = _by_digest(store, session.key_sha256)
        if entry is None or now - session.created > LIFETIME or now - session.used > IDLE:
            del self._by_token[digest]
            return None
        session.used = now
        self._by_token.move_to_end(digest)
        return entry


def set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    # Path=/: the page calls /v1/… (the playground) and /api/v1/… (start, stop) with it.
    # Secure only where the page came over TLS (a proxy in front): over plain HTTP on the LAN a
    # Secure cookie would never come back.
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LIFETIME),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/", samesite="Strict")


def same_origin(request: web.Request) -> None:
    """Refuse a state-changing request that does not come from this origin's own page: an `Origin`
    naming another host (or none: every browser sends it on a POST or DELETE), or a browser's
    `Sec-Fetch-Site` saying another site asked."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is None or not _is_origin_of(origin, request.host):
        raise ForbiddenError(
            f"The origin {origin!r} may not change anything with this session: the dashboard "
            "sends its own origin."
        )
    if site is not None and site not in ("same-origin", "none"):
        raise ForbiddenError(f"A {site} request may not change anything with this session.")


def _is_origin_of(origin: str, host: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _by_digest(store: KeyStore, sha256: str) -> KeyEntry | None:
    return next((e for e in store.entries() if e.sha256 == sha256), None)
