"""How the scheduler follows systemd, the source of truth for unit state (BRIEF §2.3): the results
of the jobs it asked for, unit changes whoever caused them, adoption at start-up, and re-adoption
after the connection to systemd was lost and found again.

Each method updates one model's slot; the scheduler then settles what follows (`_schedule`).
"""

from __future__ import annotations

from sparkctl.core.queue import WaitQueue
from sparkctl.core.slots import Slot, Transitions, start_error
from sparkctl.core.states import ActiveState, JobResult, ModelState
from sparkctl.core.swap import Swap
from sparkctl.errors import ModelStartFailedError, SparkError, UpstreamError

_SERVING = (ModelState.READY, ModelState.DRAINING)
_DOWN = (ModelState.STOPPED, ModelState.FAILED)
_UP = (ActiveState.ACTIVE, ActiveState.RELOADING, ActiveState.ACTIVATING)
# A client whose start was lost with the bus may try again as soon as it is back.
LOST_RETRY_AFTER = 5.0


class Follower:
    def __init__(self, transitions: Transitions, queue: WaitQueue, swap: Swap) -> None:
        self._t = transitions
        self._queue = queue
        self._swap = swap

    def start_finished(
        self,
        slot: Slot,
        result: JobResult,
        unit_result: str,
        detail: str,
        now: float,
        error: SparkError | None = None,
    ) -> None:
        if slot.pending == "start":
            slot.pending = None
        if result is JobResult.DONE:
            if slot.state in (ModelState.STARTING, ModelState.QUEUED, ModelState.STOPPED):
                self._t.became_ready(slot, now)
        elif result is JobResult.CANCELED:
            # Someone else's job replaced ours (a conflicting manual start): not the model's fault.
            if slot.state is ModelState.STARTING:
                self._t.set_state(slot, ModelState.STOPPED, now)
        else:
            error = error or start_error(slot, unit_result, detail)
            self._abandon_start(slot, error)
            self._t.failed(slot, error, now)

    def stop_finished(self, slot: Slot, now: float) -> None:
        if slot.pending == "stop":
            slot.pending = None
        if slot.state is ModelState.STOPPING:
            self._stopped(slot, now)

    def job_lost(self, slot: Slot, reason: str, now: float) -> None:
        """The answer to our job cannot come. A start's waiters are told at once (the model is not
        to blame: no failure is counted); a stop stays a stop, holding its memory, until systemd's
        view is read again (`resync`), so nothing is started in its place on a guess."""
        if slot.pending == "start":
            slot.pending = None
            error = ModelStartFailedError(
                f"The model '{slot.id}' could not be started: {reason}. Try again shortly.",
                retry_after=LOST_RETRY_AFTER,
            )
            self._abandon_start(slot, error)
            if slot.state is ModelState.STARTING:
                slot.load_started = None
                self._t.set_state(slot, ModelState.STOPPED, now)
        elif slot.pending == "stop":
            slot.pending = None

    def unit_state(self, slot: Slot, active: ActiveState, now: float) -> None:
        s = slot.state
        if active is ActiveState.ACTIVE:
            if s not in (*_SERVING, ModelState.STOPPING) and slot.pending != "stop":
                self._t.became_ready(slot, now)  # ours, or started by hand: either way it serves
        elif active is ActiveState.ACTIVATING:
            if s in (*_DOWN, ModelState.BACKOFF, ModelState.QUEUED) and slot.pending is None:
                self._t.set_state(slot, ModelState.STARTING, now)
                slot.load_started = now
        elif active in (ActiveState.INACTIVE, ActiveState.FAILED):
            self._went_down(slot, failed=active is ActiveState.FAILED, now=now)
        elif active is ActiveState.DEACTIVATING and s in _SERVING and slot.pending is None:
            self._t.abort(slot, UpstreamError(f"The model '{slot.id}' is being stopped."))
            self._t.set_state(slot, ModelState.STOPPING, now)

    def adopt(self, slot: Slot, active: ActiveState, now: float) -> None:
        match active:
            case ActiveState.ACTIVE | ActiveState.RELOADING:
                self._t.set_state(slot, ModelState.READY, now)
            case ActiveState.ACTIVATING:
                self._t.set_state(slot, ModelState.STARTING, now)
                slot.load_started = now
            case ActiveState.DEACTIVATING:
                self._t.set_state(slot, ModelState.STOPPING, now)
            case ActiveState.FAILED:
                self._t.set_state(slot, ModelState.FAILED, now)
            case _:
                slot.since = now  # stopped as far as this daemon knows: since it looked

    def resync(self, slot: Slot, active: ActiveState, now: float) -> None:
        """systemd's view after a reconnection. Jobs in flight were lost with the connection (their
        results came as `job_lost`); what happened meanwhile is followed like any change. A start
        still pending now was never sent (it was asked for while disconnected): its waiters stay
        queued, and the scheduler decides afresh with systemd's true picture."""
        if slot.pending == "start" and slot.state is ModelState.STARTING:
            slot.pending = None
            slot.load_started = None
            self._swap.failed(slot.id)  # a swap for it is planned again, if still needed
            if active is ActiveState.ACTIVE:
                self._t.became_ready(slot, now)  # started by hand meanwhile: serve
            else:
                self._t.set_state(slot, ModelState.STOPPED, now)
            return
        slot.pending = None
        if slot.state is ModelState.STOPPING and active in _UP:
            self._t.stop(slot, now)  # our stop never reached systemd, or its answer was lost
        else:
            self.unit_state(slot, active, now)

    def _went_down(self, slot: Slot, *, failed: bool, now: float) -> None:
        s = slot.state
        if s in _SERVING:
            # It died (or was stopped behind our back) while serving.
            self._t.abort(slot, UpstreamError(f"The model '{slot.id}' stopped while serving this request."))
            if failed:
                slot.failures += 1
                slot.last_error = UpstreamError(f"The model '{slot.id}' crashed.")
                self._t.set_state(slot, ModelState.FAILED, now)
            else:
                self._stopped(slot, now)
        elif s is ModelState.STOPPING and slot.pending is None:
            self._stopped(slot, now)
        elif s is ModelState.STARTING and slot.pending is None:
            # A start we did not issue failed (a manual start, or a Conflicts= stop).
            self._t.set_state(slot, ModelState.FAILED if failed else ModelState.STOPPED, now)

    def _stopped(self, slot: Slot, now: float) -> None:
        # What the next swap's estimate starts from; a stop sparkctl did not ask for (by hand,
        # seen at adoption) has no start to time it from, and says nothing.
        measured = slot.stop_started is not None and slot.state is ModelState.STOPPING
        slot.last_stop = now - slot.stop_started if measured and slot.stop_started is not None else None
        slot.stop_started = None
        self._swap.stopped(slot)
        self._t.set_state(slot, ModelState.STOPPED, now)

    def _abandon_start(self, slot: Slot, error: SparkError) -> None:
        """A start that will not happen: its waiters get `error`, and a swap for it is over."""
        for waiter in self._queue.take(slot.id):
            self._t.fx.reject(waiter.request, error)
        self._swap.failed(slot.id)
