"""The swap in progress, if any: a model that does not fit beside the running ones (the target),
the models drained and stopped to make room for it, and the memory gate before its start.

At most one swap runs at a time, so requests behind the target wait for it (FIFO: it cannot
starve). The target starts once nothing is in its way and, if a stop freed memory for it, once
MemAvailable shows that memory is back (bounded by memory_wait). If nobody waits for it any more
the swap is called off and the drained models serve again.
"""

from __future__ import annotations

from collections.abc import Callable

from sparkctl.core.queue import WaitQueue
from sparkctl.core.slots import Slot, Transitions, in_the_way
from sparkctl.core.states import ModelState

_WAITING = (ModelState.QUEUED, ModelState.STOPPED, ModelState.FAILED)


class Swap:
    def __init__(
        self,
        slots: dict[str, Slot],
        queue: WaitQueue,
        transitions: Transitions,
        *,
        budget: float,
        drain_timeout: float,
        memory_wait: float,
        total_memory: int,
        launch: Callable[[Slot, float], None] | None = None,
    ) -> None:
        self._slots = slots
        self._queue = queue
        self._t = transitions
        self._budget = budget
        self._drain_timeout = drain_timeout
        self._memory_wait = memory_wait
        self._total_memory = total_memory  # bytes; 0 = unknown, no memory gate
        # What "start the target" means once there is room: its unit's start, or (a worker part's
        # reservation) the grant that holds the node for it.
        self._launch = launch or transitions.start
        self.target: str | None = None
        self._freed = False  # a stop happened for the target: gate on memory before starting it
        self._gate_open: str | None = None  # the target, while its start waits for memory
        self._gate_since = 0.0
        # How long the gate has held a start (a moving average): memory comes back some moments
        # after a stop on a Spark, and the estimate of a swap counts that wait.
        self.gate_time: float | None = None

    def begin(self, slot: Slot, now: float) -> None:
        self.target = slot.id
        self._freed = False
        self._t.set_state(slot, ModelState.QUEUED, now)
        self.progress(now)

    def progress(self, now: float) -> None:
        """Drain what is in the target's way; start it once there is room (and memory)."""
        target = self.target
        if target is None:
            return
        slot = self._slots[target]
        if slot.state not in _WAITING:
            self.target = None  # it started (or was taken over): the swap is over
            return
        if not self._queue.wants(target):
            self.abandon(now)
            return
        if self._gate_open == target:
            return
        victims = in_the_way(slot, self.active(), self._budget)
        for victim in victims:
            # A worker part under its owner's reservation is never drained from here: the node is
            # held for it until the owner releases it (or its lease runs out).
            if victim.state is ModelState.READY and victim.holder is None:
                self._t.drain(victim, now, deadline=now + self._drain_timeout)
        if victims:
            return
        if self._freed and self._total_memory:
            self._gate_open = target
            self._gate_since = now
            self._t.fx.watch_memory(target, self.need_bytes(slot))
            self._t.fx.set_timer(("memory", target), now + self._memory_wait)
            return
        self._launch(slot, now)
        if slot.state not in _WAITING:
            # it started: the swap is over now, so that what queues behind it is looked at in
            # this same pass (else only at the next event: `_schedule` settles in one pass)
            self.target = None

    def abandon(self, now: float) -> None:
        """Nobody waits for the target any more: let its victims serve again."""
        target = self.target
        self.target = None
        if target is None:
            return
        if self._gate_open == target:
            self.close_gate()
        slot = self._slots[target]
        if slot.state is ModelState.QUEUED:
            self._t.set_state(slot, ModelState.STOPPED, now)
        for victim in self._slots.values():
            if victim.state is ModelState.DRAINING and victim.drain_deadline is not None:
                self._t.undrain(victim, now)

    def stopped(self, slot: Slot) -> None:
        """A model stopped: if that was for the target, its memory comes back over the next moments."""
        if self.target is not None and slot.id != self.target:
            self._freed = True

    def granted(self, model: str) -> None:
        """The target was a reservation, now granted: the swap for it is over."""
        if self.target == model:
            self.close_gate()
            self.target = None

    def failed(self, model: str) -> None:
        if self.target == model:
            self.target = None

    def waits_for_memory(self, model: str) -> bool:
        return self._gate_open == model

    def memory(self, model: str, available: int, now: float) -> None:
        """A MemAvailable reading while the gate for `model` is open."""
        if self._gate_open == model and available >= self.need_bytes(self._slots[model]):
            self._gate_passed(now)
            self._launch(self._slots[model], now)

    def memory_expired(self, model: str, now: float) -> None:
        if self._gate_open == model:
            self._t.fx.warn("memory_wait expired before enough memory was available; starting anyway", model)
            self._gate_passed(now)
            self._launch(self._slots[model], now)

    def _gate_passed(self, now: float) -> None:
        took = now - self._gate_since
        self.gate_time = took if self.gate_time is None else 0.8 * self.gate_time + 0.2 * took
        self.close_gate()

    def gate_left(self, now: float) -> float | None:
        """Seconds the open gate is likely to hold the target still (None: no gate is open)."""
        if self._gate_open is None:
            return None
        return max(0.0, (self.gate_time or 0.0) - (now - self._gate_since))

    def close_gate(self) -> None:
        if self._gate_open is not None:
            self._t.fx.unwatch_memory(self._gate_open)
            self._t.fx.cancel_timer(("memory", self._gate_open))
            self._gate_open = None

    def active(self) -> list[Slot]:
        return [s for s in self._slots.values() if s.holds_memory]

    def need_bytes(self, slot: Slot) -> int:
        # (capped at the budget: a share learned above what MemAvailable can ever show would
        # hold every start for the whole memory_wait)
        return int(min(slot.share, self._budget) * self._total_memory)
