"""A lease: the right to send one request to a ready model, held for exactly as long as its
response lasts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sparkctl.errors import SparkError


class Lease:
    """Release it when the response has ended (in a `finally`); if the model goes away
    underneath, `aborted` is set and `error` says why."""

    __slots__ = ("_callbacks", "_release", "_released", "aborted", "error", "model", "request")

    def __init__(self, request: int, model: str, release: Callable[[Lease], None]) -> None:
        self.request = request
        self.model = model
        self._release = release
        self._released = False
        self.aborted = asyncio.Event()
        self.error: SparkError | None = None
        self._callbacks: list[Callable[[], object]] = []

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release(self)

    def abort(self, error: SparkError) -> None:
        self.error = error
        self.aborted.set()
        for callback in self._callbacks:
            callback()

    def on_abort(self, callback: Callable[[], object]) -> None:
        """Call `callback` if the lease is aborted (at once, if it already was)."""
        if self.aborted.is_set():
            callback()
        else:
            self._callbacks.append(callback)
