"""What every gateway handler shares: settings, catalog, supervisor, the engines' connections,
the API keys, metrics, and which model each of the daemon's sockets stands for."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from sparkctl.catalog import Catalog
from sparkctl.core.supervisor import Supervisor
from sparkctl.gateway.bodies import BodyBudget
from sparkctl.gateway.engines import EnginePool
from sparkctl.gateway.holds import KeyHolds
from sparkctl.gateway.peers import Peers
from sparkctl.gateway.sessions import Sessions
from sparkctl.settings import Settings

if TYPE_CHECKING:
    from sparkctl.apikeys import KeyFile
    from sparkctl.gateway.metrics import Metrics


class AccessLog(Protocol):
    """Where each request's one access line goes (the daemon gives the gateway journald's)."""

    def request(
        self, method: str, route: str, model: str, status: int, seconds: float, request_id: str
    ) -> None: ...


class ConsoleAccessLog:
    """Access lines on stderr, when the logger `sparkctl.access` is enabled at INFO. The lines of
    one turn of the event loop go out in one write (stderr is line-buffered: a write per line
    was a syscall per request, #18); the clock's text is made once a second."""

    def __init__(self) -> None:
        self.enabled = logging.getLogger("sparkctl.access").isEnabledFor(logging.INFO)
        self._lines: list[str] = []
        self._second = -1
        self._clock = ""

    def request(
        self, method: str, route: str, model: str, status: int, seconds: float, request_id: str
    ) -> None:
        if not self.enabled:
            return
        now = int(time.time())
        if now != self._second:
            self._second, self._clock = now, time.strftime("%H:%M:%S", time.localtime(now))
        first = not self._lines
        self._lines.append(
            f"{self._clock} INFO    {method} {route} {model} {status} {seconds:.3f}s {request_id}\n"
        )
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a synchronous caller): said at once
                self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            sys.stderr.write("".join(lines))


@dataclass
class Gateway:
    settings: Settings
    catalog: Catalog
    supervisor: Supervisor
    keys: KeyFile | None  # None: gateway.auth = "none"
    metrics: Metrics
    bodies: BodyBudget  # gateway.body_budget
    # local port → model, for the models' own sockets (BRIEF §4.3)
    direct_ports: dict[int, str] = field(default_factory=dict)
    engines: EnginePool = field(default_factory=EnginePool)  # warm connections to the engines
    access: AccessLog = field(default_factory=ConsoleAccessLog)
    engine_auth: str | None = None  # "Bearer <engine key>" for every engine, when they take one
    started: float = field(default_factory=time.time)
    holds: KeyHolds = field(default_factory=KeyHolds)  # requests in progress, by key
    sessions: Sessions = field(default_factory=Sessions)  # the dashboard's sign-ins (#17)
    peers: Peers | None = None  # the other nodes of a cluster (#15); None: no [cluster] peers
    # model → the node that owns it, for each spanning model this node runs only a worker of
    owners: dict[str, str] = field(default_factory=dict)
    # the daemon cuts what is left of its requests: a request cut now is its doing, not a
    # client's hang-up (499)
    stopping: bool = False
    # the longest a stop to make room may take before its engine is killed (serve.stop_timeout)
    longest_stop: float = field(init=False)

    def __post_init__(self) -> None:
        self.longest_stop = max((m.spec.serve.stop_timeout for m in self.catalog.enabled), default=0.0)

    def client_left(self, transport: asyncio.BaseTransport | None) -> bool:
        """Whether a request cut on `transport` was cut by its client hanging up (499), rather
        than by this daemon's shutdown."""
        return not self.stopping and (transport is None or transport.is_closing())

    def direct_model(self, request: web.BaseRequest) -> str | None:
        if not self.direct_ports or request.transport is None:
            return None
        sockname = request.transport.get_extra_info("sockname")
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            return self.direct_ports.get(sockname[1])
        return None


GATEWAY = web.AppKey("gateway", Gateway)
