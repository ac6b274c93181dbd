"""Is a ready engine still answering? systemd knows when an engine exits, not when it hangs with
its process alive (frozen, deadlocked, its GPU wedged): its clients would then wait forever and
its leases never end (#13). So every `scheduler.health_interval` each ready (or draining) engine
is asked for its health, as the unit's readiness probe asked it; after
`scheduler.health_failures` unanswered asks in a row the owner task hears `EngineHung`, and the
scheduler ends the engine's requests with an error and restarts it.

vLLM answers `/health` from its API process even while the engine generates, so a busy engine
is not taken for a hung one; a timeout is as long as the interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from sparkctl.catalog import Catalog, span
from sparkctl.core import messages as msg
from sparkctl.core.states import ModelState, ModelView
from sparkctl.settings import Settings

log = logging.getLogger("sparkctl.supervisor")
_WATCHED = (ModelState.READY, ModelState.DRAINING)


class Liveness:
    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        views: Callable[[], Iterable[ModelView]],
        post: Callable[[msg.Message], None],
    ) -> None:
        self._catalog = catalog
        self._interval = settings.scheduler.health_interval
        self._failures = settings.scheduler.health_failures
        self._views = views
        self._post = post
        self._misses: dict[str, int] = {}  # model → unanswered asks in a row
        # A worker part of another node's model never listens: its owner's head answering is the
        # model's health, and a head that loses it exits (#15).
        self._not_here = set(span.owners([m.spec for m in catalog.enabled], settings.cluster))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            watched = [v.id for v in self._views() if v.state in _WATCHED and v.id not in self._not_here]
            answers = await asyncio.gather(*(self._answers(model) for model in watched))
            self._misses = {m: n for m, n in self._misses.items() if m in watched}
            for model, answered in zip(watched, answers, strict=True):
                self._count(model, answered)

    def _count(self, model: str, answered: bool) -> None:
        if answered:
            self._misses.pop(model, None)
            return
        misses = self._misses[model] = self._misses.get(model, 0) + 1
        if misses >= self._failures:
            del self._misses[model]
            waited = misses * self._interval
            self._post(
                msg.EngineHung(model, f"its health check went unanswered {misses} times in {waited:.0f}s")
            )

    async def _answers(self, model: str) -> bool:
        """Whether the engine's health URL answers 200 within the interval (a plain HTTP/1.0
        GET: one status line is all it takes, and a hung engine holds nothing but a socket)."""
        m = self._catalog.models[model]
        request = f"GET {m.spec.engine.health_path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        try:
            async with asyncio.timeout(self._interval):
                reader, writer = await asyncio.open_connection("127.0.0.1", m.host_port)
                try:
                    writer.write(request)
                    status = (await reader.readline()).split()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return False
        return len(status) >= 2 and status[1] == b"200"
