"""What every gateway handler shares: settings, catalog, supervisor, the engines' client session,
the API keys, metrics, and which model each of the daemon's sockets stands for."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ..catalog import Catalog
from ..journal import AccessLog
from ..settings import Settings
from ..supervisor import Supervisor

if TYPE_CHECKING:
    from ..apikeys import KeyFile
    from .metrics import Metrics


@dataclass
class Gateway:
    settings: Settings
    catalog: Catalog
    supervisor: Supervisor
    keys: KeyFile | None  # None: gateway.auth = "none"
    metrics: Metrics
    # local port → model, for the models' own sockets (BRIEF §4.3)
    direct_ports: dict[int, str] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    access: AccessLog = field(default_factory=AccessLog)
    started: float = field(default_factory=time.time)

    def direct_model(self, request: web.BaseRequest) -> str | None:
        if not self.direct_ports or request.transport is None:
            return None
        sockname = request.transport.get_extra_info("sockname")
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            return self.direct_ports.get(sockname[1])
        return None

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the gateway's client session is opened by its cleanup_ctx"
        return self.session


GATEWAY = web.AppKey("gateway", Gateway)
