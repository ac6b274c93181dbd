"""The daemon's side of the keys: `KeyFile`, the key file re-read when it changes, and the key a
request presents."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sparkctl.apikeys.entries import KeyEntry
from sparkctl.apikeys.store import KeyStore
from sparkctl.errors import SparkError

log = logging.getLogger("sparkctl.keys")


class KeyFile:
    """The daemon's view of the key file, re-read when the file changes.

    The file is looked at once per `interval` and reloaded when its signature changed, so
    `sparkctl keys add` and `revoke` take effect within a second, without a restart or a signal.
    The daemon runs `watch()`, which looks from a worker thread, so no file I/O happens on the
    event loop; without a watcher (a tool, a test) `authenticate` looks itself, at most once per
    interval. A file that turns invalid is logged and the last good keys stay in force: a
    half-edited file must not lock every client out. A file that disappears holds no keys, as at
    startup.
    """

    def __init__(
        self, path: Path, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        # The signature is taken before reading: a write between the two then shows as a change at
        # the next check and is read again, never missed.
        self._signature = _signature(path)
        # At startup an invalid file is an error, not "no keys": the daemon refuses to start.
        self._store = KeyStore.load(path)
        self._checked = clock()
        self._watched = False
        if not len(self._store):
            log.warning("no API keys in %s; create one with: sparkctl keys add NAME", path)

    @property
    def store(self) -> KeyStore:
        return self._store

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (and, unless `force`, the interval has passed since the
        last look); True when new keys were loaded."""
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        # Remembered even if the read fails: the error is logged once per change of the file, not
        # once a second, and the next write (or chmod) is read again.
        self._signature = signature
        try:
            store = KeyStore.load(self.path)
        except SparkError as e:
            log.error("%s; keeping the %d keys loaded before", e, len(self._store))
            return False
        self._store = store
        log.info("reloaded %s: %d keys", self.path, len(store))
        return True

    def authenticate(self, presented: str | None) -> KeyEntry | None:
        if not self._watched:
            self.refresh()
        return self._store.authenticate(presented)

    async def watch(self, on_reload: Callable[[KeyStore], object] | None = None) -> None:
        """Look at the file every `interval`, from a worker thread, until cancelled, and call
        `on_reload(store)` on the loop after each reload. (Only the reference to the store changes
        hands between the threads: an atomic assignment.)"""
        self._watched = True
        try:
            while True:
                await asyncio.sleep(self._interval)
                if await asyncio.to_thread(self.refresh, force=True) and on_reload is not None:
                    on_reload(self._store)
        finally:
            self._watched = False


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer KEY` (OpenAI style; the scheme is case
    insensitive) or else `x-api-key: KEY` (Anthropic style, as `/v1/messages` clients send it)."""
    authorization = _header(headers, "Authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            return token
    api_key = _header(headers, "x-api-key")
    if api_key is not None and api_key.strip():
        return api_key.strip()
    return None


# ------------------------------------------------------------------------------------- internals


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive already (the fast path); a plain dict is not.
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a changed file apart: inode (every atomic write is a new file), mtime and size
    (an editor writing in place), and ctime (a chmod or chown that makes the file readable
    changes nothing else). None when the file does not exist, or cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)
