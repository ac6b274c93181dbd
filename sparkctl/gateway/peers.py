"""The other nodes of a cluster (BRIEF §9, #15), as this node knows them: each peer's own models,
learned by asking its `/v1/models` (with an admin key of the peer's) every
`cluster.poll_interval`, and on demand when a request names a model no node is known to serve.

A peer that does not answer a poll within `cluster.poll_timeout` is down: its models are listed
`unavailable` (last known, kept). Why matters for its requests. One that cannot be reached at all
(refused, no route, no connection within `cluster.connect_timeout`: its daemon stopped, its host
or the link gone) is `unreachable`: requests for its models get 503 `peer_unavailable` at once,
and requests being relayed to it end with that error, rather than waiting on a connection that
will never speak again. One that accepts but answers slowly (a daemon restarting: systemd holds
its socket meanwhile, so connections wait rather than fail) still gets requests, which wait as
they would on that node; its in-flight relays go on. Nothing local waits on a peer: polls run in
their own task, and a relay is its own request.

A node asks its peers with the relay marker (`RELAYED`), to which a node answers with its own
models only and never relays: listings and requests cannot go round in circles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from sparkctl.errors import ConfigError, Issue, PeerUnavailableError
from sparkctl.settings import ClusterSettings

log = logging.getLogger("sparkctl.cluster")

# The marker a relayed request (and a peer's poll) carries: the name of the node it came from.
RELAYED = "X-Sparkctl-Relayed-By"
# What a model id or alias from a peer may look like before this node uses it (the gateway's own
# rule for names, routing.MODEL_NAME): a peer's listing is input like any other.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_KEY = re.compile(r"^[\x21-\x7e]{8,256}$")
ON_DEMAND_EVERY = 1.0  # seconds: requests for unknown models refresh the peers at most this often
NOT_ASKED = "not asked yet"
MAX_LISTING = 16 * 1024 * 1024  # bytes: a peer's /v1/models larger than this is not read


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    url: URL
    key: str


def read_peers(cluster: ClusterSettings) -> list[Peer]:
    """Each configured peer with its key, read from its api_key_file (blocking: call it from a
    thread). A missing or unreadable key file is a configuration error that names it."""
    peers: list[Peer] = []
    issues: list[Issue] = []
    for i, settings in enumerate(cluster.peers):
        where = f"cluster.peers[{i}].api_key_file"
        path = settings.api_key_file
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            issues.append(Issue(str(path), where, f"cannot read {settings.name}'s key: {e.strerror or e}"))
            continue
        except UnicodeDecodeError:
            issues.append(Issue(str(path), where, "not UTF-8 text"))
            continue
        if not _KEY.fullmatch(key):
            issues.append(
                Issue(
                    str(path),
                    where,
                    f"must hold one admin key of {settings.name}'s (what `sparkctl keys add NAME "
                    "--admin` printed there), alone",
                )
            )
            continue
        peers.append(Peer(settings.name, URL(settings.url), key))
    if issues:
        raise ConfigError(issues)
    return peers


@dataclass
class PeerState:
    """What this node knows of one peer. `models` are the peer's own `/v1/models` entries as it
    last listed them; kept while it is down, so its models stay listed (unavailable)."""

    peer: Peer
    models: list[dict[str, Any]] = field(default_factory=list)
    listed: bool = False  # it has answered at least once
    up: bool = False
    unreachable: bool = False  # down, and not even a connection could be made (see above)
    checked: float | None = None  # wall time of the last ask
    answered: float | None = None  # wall time of the last answer
    error: str | None = NOT_ASKED
    # relays to it in flight: each one's way to end it with an error when the peer is found
    # unreachable
    relays: set[Callable[[PeerUnavailableError], None]] = field(default_factory=set)

    def find(self, name: str) -> dict[str, Any] | None:
        for entry in self.models:
            if entry["id"] == name or name in entry.get("aliases", ()):
                return entry
        return None

    def unavailable(self, model: str) -> PeerUnavailableError:
        return PeerUnavailableError(
            f"The node '{self.peer.name}', which serves '{model}', does not answer"
            f"{f' ({self.error})' if self.error else ''}.",
            retry_after=5,
        )


@dataclass(frozen=True, slots=True)
class Remote:
    """A model that a peer serves: where a request for it goes."""

    state: PeerState
    model_id: str

    @property
    def peer(self) -> Peer:
        return self.state.peer


class Peers:
    """The peers of this node and what they serve; polls them from its own task (`run`)."""

    def __init__(self, node: str, peers: list[Peer], settings: ClusterSettings) -> None:
        self.node = node
        self.settings = settings
        self.states = {p.name: PeerState(p) for p in peers}
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._refreshing: asyncio.Future[None] | None = None
        self._last_on_demand = -ON_DEMAND_EVERY
        self._rounds = 0  # rounds of polls completed

    def __iter__(self) -> Iterator[PeerState]:
        return iter(self.states.values())

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Peers.open opens the session"
        return self._session

    # ------------------------------------------------------------------------------- polling
    def open(self) -> None:
        """The peers' client session (inside the event loop, before anything asks a peer)."""
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            # No read timeout: a relayed answer takes as long as the peer's model needs (a start
            # included). A poll that finds the peer unreachable ends its relays; a hung daemon
            # is restarted by its own watchdog, which ends them too.
            timeout=aiohttp.ClientTimeout(total=None, connect=self.settings.connect_timeout, sock_read=None),
        )

    async def close(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        """Poll every peer each poll_interval (sooner when `wake` is called), until cancelled."""
        loop = asyncio.get_running_loop()
        interval = self.settings.poll_interval
        while True:
            self._wake.clear()
            began = loop.time()
            try:
                await self.refresh()
            except Exception:  # a bug in one round must not end every later one
                log.exception("polling the cluster's peers failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            # Woken early, a round still waits out ON_DEMAND_EVERY: requests for the models of a
            # peer that is down (each of which wakes the poller) cannot make the polls spin.
            if (gap := min(ON_DEMAND_EVERY, interval) - (loop.time() - began)) > 0:
                await asyncio.sleep(gap)

    async def settled(self) -> None:
        """Wait (at most a poll's timeout) for the first round of polls: a daemon started by
        socket activation is often started by the very request that lists the cluster."""
        if self._rounds > 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh(), self.settings.poll_timeout + 0.5)

    def wake(self) -> None:
        """Poll now (a request found a peer down: it may be back)."""
        self._wake.set()

    async def refresh(self) -> None:
        """Ask every peer now; concurrent callers share one round."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._round())
        await asyncio.shield(self._refreshing)

    async def _round(self) -> None:
        await asyncio.gather(*(self._poll(state) for state in self))
        self._rounds += 1

    async def _poll(self, state: PeerState) -> None:
        peer = state.peer
        state.checked = time.time()
        timeout = aiohttp.ClientTimeout(
            total=self.settings.poll_timeout, connect=self.settings.connect_timeout
        )
        headers = {
            "Authorization": f"Bearer {peer.key}",
            RELAYED: self.node,
            "Accept": "application/json",
            # A fresh connection for every poll: one kept alive across a pulled cable would only
            # time out (a slow peer, as far as a poll can tell), where a new one finds nobody
            # there within connect_timeout.
            "Connection": "close",
        }
        try:
            async with self.session.get(peer.url / "v1" / "models", headers=headers, timeout=timeout) as r:
                if r.status != 200:
                    self._down(state, f"its /v1/models answered HTTP {r.status}", unreachable=False)
                    return
                raw = await r.content.read(MAX_LISTING + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._down(state, _reason(e), unreachable=is_unreachable(e))
            return
        models = _own_models(raw, peer.name)
        if models is None:
            self._down(state, "its /v1/models is not a model list", unreachable=False)
            return
        if not state.up:
            log.info("peer %s answers: %d models", peer.name, len(models), extra={"peer": peer.name})
        state.models, state.listed, state.up, state.unreachable = models, True, True, False
        state.answered, state.error = time.time(), None

    def _down(self, state: PeerState, reason: str, *, unreachable: bool) -> None:
        if state.up or state.error == NOT_ASKED:  # once per outage, not once per poll
            log.warning(
                "peer %s does not answer: %s", state.peer.name, reason, extra={"peer": state.peer.name}
            )
        state.up, state.error, state.unreachable = False, reason, unreachable
        if unreachable:
            error = state.unavailable("its models")
            for end in list(state.relays):
                end(error)

    def failed(self, state: PeerState, error: BaseException) -> None:
        """A relay could not reach the peer: it is down until it answers a poll again."""
        self._down(state, _reason(error), unreachable=is_unreachable(error))
        self.wake()

    # ------------------------------------------------------------------------------- lookup
    def find(self, name: str) -> Remote | None:
        """The peer that serves `name` (an id or an alias), as last listed; the first configured
        peer wins when two serve the same name."""
        for state in self:
            entry = state.find(name)
            if entry is not None:
                return Remote(state, str(entry["id"]))
        return None

    def at(self, node: str, model: str) -> Remote | None:
        """`model` on the peer called `node`, whether or not it lists it now (a spanning model's
        owner serves it; a request for it at a worker node goes there)."""
        for state in self:
            if state.peer.name == node:
                return Remote(state, model)
        return None

    async def locate(self, name: str) -> Remote | None:
        """`find`, after asking the peers afresh if none is known to serve it (at most once per
        ON_DEMAND_EVERY: unknown names must not flood the peers)."""
        if (found := self.find(name)) is not None:
            return found
        now = time.monotonic()
        if now - self._last_on_demand < ON_DEMAND_EVERY:
            return None
        self._last_on_demand = now
        await self.refresh()
        return self.find(name)

    def never_listed(self) -> list[PeerState]:
        """Peers whose models are not known at all (down since this daemon started)."""
        return [s for s in self if not s.listed]

    def listing(self) -> list[dict[str, Any]]:
        """The peers' models as this node's /v1/models lists them: with `node`, and, for a peer
        that does not answer, `available: false` and state `unavailable`."""
        out: list[dict[str, Any]] = []
        for state in self:
            for entry in state.models:
                item = {**entry, "node": state.peer.name, "available": state.up}
                if not state.up:
                    item["state"] = "unavailable"
                out.append(item)
        return out


def is_unreachable(error: BaseException) -> bool:
    """No connection could be made (refused, no route, the connect timeout): nobody is there,
    as opposed to a peer that accepted and is slow to answer."""
    return isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text[:200]


def _own_models(raw: bytes, node: str) -> list[dict[str, Any]] | None:
    """The entries of a peer's /v1/models that it serves itself, with well-formed names (a peer
    of the peer's, this node included, is listed by that node, not here)."""
    if len(raw) > MAX_LISTING:
        return None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    own: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("node", node) != node:
            continue
        if not isinstance(entry.get("id"), str) or not _NAME.fullmatch(entry["id"]):
            continue
        aliases = entry.get("aliases", [])
        entry["aliases"] = (
            [a for a in aliases if isinstance(a, str) and _NAME.fullmatch(a)]
            if isinstance(aliases, list)
            else []
        )
        if not entry["aliases"]:
            del entry["aliases"]
        own.append(entry)
    return own
