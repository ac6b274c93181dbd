"""The requests in progress under each API key, so that revoking a key (or taking its admin scope
away) ends them at once — streams and waits included, `/api/v1/events` too — instead of letting
them run for as long as the client cares to hold them (#13).

A request that can end itself cleanly says how (`on_end`): a relayed response aborts its lease,
so the client gets the error in the envelope or as an SSE error event; the event stream writes
an error event. Any other is cancelled; a request cancelled while it waits for its model finds
`Hold.error` and answers with it (the envelope, or an SSE error event), as invariant 2 asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from aiohttp import web

from sparkctl.apikeys import KeyEntry, KeyStore
from sparkctl.errors import SparkError, UnauthorizedError

log = logging.getLogger("sparkctl.gateway")


class Hold:
    """One request, held under the key it presented."""

    __slots__ = ("_ender", "admin", "error", "name", "task")

    def __init__(self, name: str, *, admin: bool) -> None:
        self.name = name
        self.admin = admin  # it needs the admin scope
        self.task = asyncio.current_task()
        self._ender: Callable[[SparkError], object] | None = None
        self.error: SparkError | None = None  # why it was ended, once it was

    def on_end(self, ender: Callable[[SparkError], object]) -> None:
        """From now on, revoking the key calls `ender(error)` instead of cancelling the request."""
        self._ender = ender

    def end(self, error: SparkError) -> None:
        self.error = error
        if self._ender is not None:
            self._ender(error)
        elif self.task is not None:
            self.task.cancel(error.message)


class KeyHolds:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Hold]] = {}  # sha256 → the requests it holds

    @contextlib.contextmanager
    def hold(self, entry: KeyEntry, *, admin: bool) -> Iterator[Hold]:
        held = self.enter(entry, admin=admin)
        try:
            yield held
        finally:
            self.leave(entry, held)

    # `hold` in two calls, for a caller that does without a context manager's generator (#18)
    def enter(self, entry: KeyEntry, *, admin: bool) -> Hold:
        held = Hold(entry.name, admin=admin)
        holds = self._by_key.get(entry.sha256)
        if holds is None:
            holds = self._by_key[entry.sha256] = set()
        holds.add(held)
        return held

    def leave(self, entry: KeyEntry, held: Hold) -> None:
        holds = self._by_key.get(entry.sha256)
        if holds is not None:
            holds.discard(held)
            if not holds:
                del self._by_key[entry.sha256]

    def __len__(self) -> int:
        return sum(len(h) for h in self._by_key.values())

    def revoke(self, store: KeyStore) -> int:
        """End every request whose key `store` no longer has (or no longer as an admin key, for
        one that needs it); how many were ended."""
        current = {e.sha256: e for e in store.entries()}
        ended = 0
        for sha256, holds in list(self._by_key.items()):
            entry = current.get(sha256)
            for held in list(holds):
                if entry is None or (held.admin and not entry.admin):
                    reason = "was revoked" if entry is None else "is no longer an admin key"
                    held.end(UnauthorizedError(f"The API key '{held.name}' {reason}: this request is ended."))
                    ended += 1
        if ended:
            log.info("ended %d requests of revoked keys", ended)
        return ended


HOLD = web.RequestKey("hold", Hold)
