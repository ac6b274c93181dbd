"""The owning node's side of a model that spans nodes (#15): what it asks of each other node the
model spans, over that node's admin API (gateway/span.py answers there) — before anything stops,
what the model lacks on it; then a reservation of the node, renewed while held; the worker part's
start; at the end, the worker's stop and the release.

The owner's effects (effects.py) drive this around the head's own unit: check, reserve, start
the workers, then the head; renew while it serves; on any end, release. Every failure names the
node, and a node that does not answer is `peer_unavailable`, never a hang (each call is bounded
by `timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from sparkctl.errors import (
    ModelStartFailedError,
    ModelStartTimeoutError,
    PeerUnavailableError,
    SparkError,
)

log = logging.getLogger("sparkctl.supervisor")
RETRY_AFTER = 30.0  # seconds a client is told to wait after a failed multi-node start


@dataclass(frozen=True, slots=True)
class PeerLink:
    """A node the model spans, as the owner reaches it: its gateway and an admin key of its own
    (gateway/peers.py reads both from [cluster] peers)."""

    name: str
    url: str
    key: str


class Parts:
    """The other nodes of one spanning model, from its owner."""

    def __init__(
        self,
        model: str,
        owner: str,
        peers: Sequence[PeerLink],
        session: aiohttp.ClientSession,
        *,
        fingerprint: str | None = None,
        lease: float = 30.0,
        poll: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.model = model
        self.owner = owner
        self.peers = list(peers)
        self._session = session
        self._fingerprint = fingerprint  # the owner's catalog entry for the model (span.fingerprint)
        self.lease = lease
        self._poll = poll
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def check(self) -> None:
        """Before anything stops anywhere: raise, naming the node and the fix, if the model lacks
        its weights or its image on any node it spans, or its catalog entry there differs."""
        answers = await asyncio.gather(
            *(self._call(p, "GET", f"/api/v1/models/{self.model}/preflight") for p in self.peers)
        )
        for peer, (status, body) in zip(self.peers, answers, strict=True):
            if status != 200:
                raise self._refused(peer, "its preflight", body)
            theirs = body.get("catalog_sha256")
            if self._fingerprint is not None and theirs is not None and theirs != self._fingerprint:
                raise ModelStartFailedError(
                    f"The model '{self.model}' cannot start: its catalog entry on {peer.name} differs "
                    f"from this node's; every node it spans needs the same file.",
                    retry_after=RETRY_AFTER,
                    hint=f"copy {self.model}'s catalog file to {peer.name} (/etc/sparkctl/models), "
                    "then `sparkctl install` there",
                )
            if missing := body.get("missing"):
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise ModelStartFailedError(
                    f"The model '{self.model}' cannot start: on {peer.name}, {missing[0]}{more}.",
                    retry_after=RETRY_AFTER,
                    hint=f"on {peer.name}: {missing[0]}",
                )

    async def reserve(self, within: float) -> None:
        """Reserve every node, asking again each `poll` seconds (which renews those already held)
        until all are held; after `within` seconds release them all and raise."""
        deadline = time.monotonic() + within
        while True:
            held = await asyncio.gather(*(self._reserve(p) for p in self.peers), return_exceptions=True)
            failed = next((h for h in held if isinstance(h, BaseException)), None)
            if failed is not None:
                await self.release()
                raise failed
            waiting = [p.name for p, h in zip(self.peers, held, strict=True) if h is not True]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                await self.release()
                raise ModelStartTimeoutError(
                    f"The model '{self.model}' did not start: {', '.join(waiting)} did not free itself "
                    f"for it within {within:g}s (its own models drain first).",
                    retry_after=RETRY_AFTER,
                )
            await asyncio.sleep(self._poll)

    async def start_workers(self) -> None:
        """Start the worker part on every node (held for it): each starts at once there."""
        answers = await asyncio.gather(
            *(self._call(p, "POST", f"/api/v1/models/{self.model}/start") for p in self.peers)
        )
        for peer, (status, body) in zip(self.peers, answers, strict=True):
            if status != 202:
                raise self._refused(peer, "the start of its worker part", body)

    async def keep(self, on_wanted: Callable[[str], None] | None = None) -> None:
        """Renew every reservation for as long as the model runs (cancel it to end): each third
        of the lease, and at least every `poll` × 2 seconds so that a node whose own requests
        wait for it (`on_wanted(node)`) is heard of soon. Ends by raising when a node stops
        answering or no longer holds itself for the model: PeerUnavailableError naming it, on
        which the model is to be stopped."""
        every = min(self.lease / 3, self._poll * 2)
        while True:  # at once first: a daemon that adopted the model renews before the lease ends
            for peer in self.peers:
                held, wanted = await self._renew(peer, only=True)
                if not held:
                    raise PeerUnavailableError(
                        f"{peer.name} no longer holds itself for '{self.model}' (its reservation ended).",
                        retry_after=RETRY_AFTER,
                    )
                if wanted and on_wanted is not None:
                    on_wanted(peer.name)
            await asyncio.sleep(every)

    async def release(self) -> list[str]:
        """Stop the worker parts and release every node, as far as each answers; the names of
        those that did not (their reservations run out by themselves within the lease)."""

        async def one(peer: PeerLink) -> None:
            await self._call(peer, "POST", f"/api/v1/models/{self.model}/stop", {"now": "1"})
            await self._call(peer, "DELETE", f"/api/v1/reservations/{self.model}", {"holder": self.owner})

        results = await asyncio.gather(*(one(p) for p in self.peers), return_exceptions=True)
        unreached = [p.name for p, r in zip(self.peers, results, strict=True) if isinstance(r, BaseException)]
        for name in unreached:
            log.warning("%s: could not release %s; its reservation runs out by itself", self.model, name)
        return unreached

    async def _reserve(self, peer: PeerLink) -> bool:
        return (await self._renew(peer))[0]

    async def _renew(self, peer: PeerLink, *, only: bool = False) -> tuple[bool, bool]:
        """Reserve `peer`, or renew its reservation (`only`: one that ended is an error, as its
        worker part is gone): (held, its own requests wait for it)."""
        query = {"holder": self.owner, "lease": f"{self.lease:g}"}
        if only:
            query["renew"] = "1"
        status, body = await self._call(peer, "POST", f"/api/v1/reservations/{self.model}", query)
        if only and status == 409:
            raise PeerUnavailableError(
                f"{peer.name} no longer holds itself for '{self.model}' ({_said(body)})",
                retry_after=RETRY_AFTER,
            )
        if status not in (200, 202):
            raise self._refused(peer, "a reservation", body)
        return status == 200, body.get("wanted_back") is True

    async def _call(
        self, peer: PeerLink, method: str, path: str, query: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {peer.key}"}
        try:
            async with self._session.request(
                method, peer.url + path, params=query, headers=headers, timeout=self._timeout
            ) as r:
                body = await r.json(content_type=None) if r.status != 204 else {}
                return r.status, body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise PeerUnavailableError(
                f"{peer.name} does not answer ({type(e).__name__}: {e}), and the model "
                f"'{self.model}' spans it.",
                retry_after=RETRY_AFTER,
            ) from None

    def _refused(self, peer: PeerLink, what: str, body: dict[str, Any]) -> SparkError:
        return ModelStartFailedError(
            f"The model '{self.model}' did not start: {peer.name} refused {what}: {_said(body)}",
            retry_after=RETRY_AFTER,
            hint=f"sparkctl ps on {peer.name}; journalctl -u sparkctl.service there",
        )


def _said(body: dict[str, Any]) -> str:
    """What a node's error envelope says."""
    error = body.get("error")
    said = error.get("message") if isinstance(error, dict) else None
    return str(said or body or "no reason given")
