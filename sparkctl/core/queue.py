"""The scheduler's one FIFO queue: requests waiting for a lease, starts nobody waits on, and
other nodes' reservations of this one.

All kinds keep their place in line — an operator's start queues behind the requests that came
before it — but only a `Waiter` is ever granted a lease; a `Wanted` start is satisfied by its model
becoming ready, a `Reservation` by the node being free for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiter:
    """A request waiting for a lease on `model`."""

    request: int
    model: str
    since: float


@dataclass(frozen=True, slots=True)
class Wanted:
    """A start no request waits on: an operator's, a preload, or a `Prefer: wait=0` request's."""

    model: str
    since: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """Another node (`holder`) that owns the spanning model `model`, asking for this node, where
    its worker runs (#15): it queues like a request for an exclusive model, and once granted the
    node is held for it — no local start — until it is released or its lease runs out."""

    model: str
    holder: str
    since: float


Entry = Waiter | Wanted | Reservation


class WaitQueue:
    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries))  # a copy: callers may change the queue as they go

    def append(self, entry: Entry) -> None:
        self._entries.append(entry)

    @property
    def requests(self) -> int:
        """Requests waiting, all models."""
        return sum(1 for e in self._entries if isinstance(e, Waiter))

    def waiting_for(self, model: str) -> int:
        return sum(1 for e in self._entries if isinstance(e, Waiter) and e.model == model)

    def ahead_of(self, model: str) -> int:
        """Requests queued for other models before the first one for `model` (all of them if
        nothing is queued for it): what its requests wait behind."""
        ahead = 0
        for e in self._entries:
            if e.model == model:
                break
            ahead += isinstance(e, Waiter)
        return ahead

    def wants(self, model: str) -> bool:
        """Anything, request or start, is queued for `model`."""
        return bool(self._entries) and any(e.model == model for e in self._entries)

    def retain(self, keep: Callable[[Entry], bool]) -> None:
        """Keep the entries `keep` says yes to, in order."""
        self._entries = deque(e for e in self._entries if keep(e))

    def cancel(self, request: int) -> bool:
        """Withdraw a waiting request; False if it was not waiting."""
        before = len(self._entries)
        self.retain(lambda e: not (isinstance(e, Waiter) and e.request == request))
        return len(self._entries) != before

    def drop_wanted(self, model: str) -> None:
        self.retain(lambda e: not (isinstance(e, Wanted) and e.model == model))

    def take(self, model: str) -> list[Waiter]:
        """Remove the requests and starts queued for `model` (its start will not happen); the
        requests among them, to answer. Another node's reservation keeps its place."""
        taken = [e for e in self._entries if isinstance(e, Waiter) and e.model == model]
        self.retain(lambda e: e.model != model or isinstance(e, Reservation))
        return taken

    def reservation(self, model: str) -> Reservation | None:
        """Another node's reservation for `model`, while it waits its turn."""
        return next((e for e in self._entries if isinstance(e, Reservation) and e.model == model), None)

    def drop_reservation(self, model: str) -> None:
        self.retain(lambda e: not (isinstance(e, Reservation) and e.model == model))
