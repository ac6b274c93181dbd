"""Who runs on the GPU, and when: the pure decision core of the supervisor (BRIEF §2, §3).

Synchronous and free of I/O: every input is a method call carrying the current time, every
output is a call on the `Effects` it was given (start or stop a unit, grant or reject a waiting
request, arm a timer, watch memory). The supervisor feeds it systemd's events and performs its
effects; tests drive it event by event with a recording fake and a hand-moved clock.

Policy, in short:
- a request for a ready model gets a lease now; for a starting one it joins the waiters;
- waiters are served in arrival order (FIFO). The oldest waiter whose model is not running
  decides the next start: if the model fits beside the running set it starts at once, otherwise
  it becomes the swap target — the models in its way are drained (they finish their in-flight
  requests, bounded by drain_timeout, while new requests for them queue behind the target, so the
  target cannot starve), stopped, and once the stop jobs are done *and* the memory they held is
  available again (bounded by memory_wait) the target starts;
- idle means no lease: the idle deadline runs from the end of the last response, a new lease
  cancels it, and an explicit stop is the same path with a deadline of zero;
- a failed start fails every waiter with the unit's result; repeated failures mean back-off
  (an immediate 503 with Retry-After) instead of a restart loop; a unit that dies while serving
  ends its leases with an error at once;
- pinned models stay loaded and are never evicted while they fit; whatever systemd reports that
  sparkctl did not ask for (a manual start, a crash) becomes the scheduler's view;
- another node that owns a model spanning this one reserves this node for its worker part (#15):
  the reservation queues like a request for an exclusive model (FIFO with local requests, the
  tenants drained and stopped, the memory gate), is granted once the node is free, and then
  holds it — no local start, and the worker is started or stopped only at the owner's word —
  until the owner releases it or stops renewing it (its lease runs out).

The primitive transitions of one model live in `slots.py`, the queue in `queue.py`, the swap in
progress in `swap.py`, how systemd's answers are followed in `follow.py`; this module is the
policy that chooses between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from sparkctl.core.estimate import Eta, Line, estimate_all, estimate_ready
from sparkctl.core.follow import Follower
from sparkctl.core.queue import Reservation, Waiter, WaitQueue, Wanted
from sparkctl.core.slots import (
    GIB,
    Slot,
    Transitions,
    backoff_error,
    fits,
    idle_stop_wanted,
    load_guessed,
    load_time,
    too_large,
)
from sparkctl.core.states import ActiveState, Effects, JobResult, ModelInfo, ModelState, ModelView, TimerKey
from sparkctl.core.swap import Swap
from sparkctl.errors import (
    ModelLoadingError,
    QueueFullError,
    ReservationError,
    SparkError,
    UnknownModelError,
    UpstreamError,
)


@dataclass(frozen=True, slots=True)
class Granted:
    """The request holds a lease on a ready model now."""


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits; effects.grant or effects.reject will settle it."""


GRANTED = Granted()
QUEUED = Queued()
_SERVING = (ModelState.READY, ModelState.DRAINING)
_DOWN = (ModelState.STOPPED, ModelState.FAILED)
# A learned footprint this far above the declared share is worth a warning: the catalog's
# gpu_memory_utilization understates what the model takes, and co-residence now uses the footprint.
WELL_ABOVE = 1.25


class Scheduler:
    def __init__(
        self,
        models: list[ModelInfo],
        effects: Effects,
        *,
        memory_budget: float = 0.94,
        drain_timeout: float = 600.0,
        memory_wait: float = 60.0,
        queue_limit: int = 256,
        total_memory: int = 0,  # bytes; 0 = unknown, no memory gate
    ) -> None:
        self._slots = {m.id: Slot(m) for m in models}
        self._fx = effects
        self._t = Transitions(effects)
        self._budget = memory_budget
        self._total = total_memory
        self._drain_timeout = drain_timeout
        self._queue_limit = queue_limit
        self._queue = WaitQueue()
        self._swap = Swap(
            self._slots,
            self._queue,
            self._t,
            budget=memory_budget,
            drain_timeout=drain_timeout,
            memory_wait=memory_wait,
            total_memory=total_memory,
            launch=self._launch,
        )
        # Other nodes' reservations of this one, waiting or granted: model → (holder, lease end).
        self._reservations: dict[str, tuple[str, float]] = {}
        self._follow = Follower(self._t, self._queue, self._swap)

    # ------------------------------------------------------------------------------ requests
    def acquire(self, request: int, model: str, now: float, *, wait: bool = True) -> Granted | Queued:
        """Ask for a lease on `model`. Raises a SparkError when the request cannot be served."""
        slot = self._slot(model)
        if slot.info.worker:
            raise ReservationError(
                f"The model '{model}' is served by the node that owns it; this node runs only a "
                "worker part of it."
            )
        if slot.state is ModelState.BACKOFF:
            if now < slot.backoff_until:
                raise backoff_error(slot, now)
            self._t.set_state(slot, ModelState.FAILED, now)
        if slot.can_serve and not self._queue.wants(model):
            self._t.lease(slot, request, now)
            return GRANTED
        self._never_fits(slot)
        if not wait:
            self._want(model, now)  # not waiting, but the model should come: a retry finds it
            self._schedule(now)
            raise ModelLoadingError(
                f"The model '{model}' is {slot.state.value}; not waiting because the request said so.",
                retry_after=self.retry_after(model, now),
            )
        if len(self._queue) >= self._queue_limit:
            raise QueueFullError(
                f"Too many requests are waiting ({self._queue_limit}); try again shortly.",
                retry_after=self.retry_after(model, now),
            )
        self._queue.append(Waiter(request, model, now))
        self._schedule(now)
        return QUEUED

    def grantable(self, model: str) -> bool:
        """Whether `acquire` would grant a lease on `model` now (pure: nothing changes)."""
        slot = self._slots.get(model)
        return slot is not None and not slot.info.worker and slot.can_serve and not self._queue.wants(model)

    def release(self, request: int, model: str, now: float) -> None:
        """The lease's response ended (completely, with an error, or by client disconnect)."""
        slot = self._slot(model)
        if request in slot.leases:
            self._t.unlease(slot, request, now)
            if self._queue or self._swap.target is not None or slot.state is ModelState.DRAINING:
                self._schedule(now)
            else:
                # Nothing waits and nothing swaps: of all `_schedule` settles, only this slot's
                # idle timer can have changed, as every event leaves the rest settled (the random
                # walks check it). One slot, not every model's, on each request's end (#18).
                self._arm_idle_slot(slot, now)

    def cancel(self, request: int, now: float) -> None:
        """A waiter gave up (its client went away, or it timed out) before being granted."""
        if self._queue.cancel(request):
            self._schedule(now)

    # ------------------------------------------------------------------------------ systemd
    def start_finished(
        self,
        model: str,
        result: JobResult,
        unit_result: str,
        now: float,
        detail: str = "",
        error: SparkError | None = None,
    ) -> None:
        """Our start job ended: DONE means ready (the unit probes health). On failure
        `unit_result` is the unit's Result (exit-code, timeout, …) and `detail` what the unit
        said last (its final log line), which waiters see — or `error`, when the start failed
        before its unit's job (a spanning model's other node, #15)."""
        self._follow.start_finished(self._slot(model), result, unit_result, detail, now, error)
        self._schedule(now)

    def stop_finished(self, model: str, now: float) -> None:
        self._follow.stop_finished(self._slot(model), now)
        self._schedule(now)

    def job_lost(self, model: str, reason: str, now: float) -> None:
        """Our job's answer cannot come: the connection to systemd broke (`reason`)."""
        self._follow.job_lost(self._slot(model), reason, now)
        self._schedule(now)

    def unit_state(self, model: str, active: ActiveState, now: float) -> None:
        """systemd's view changed (PropertiesChanged): follow it, whoever caused the change."""
        self._follow.unit_state(self._slot(model), active, now)
        self._schedule(now)

    def adopt(self, states: dict[str, ActiveState], now: float) -> None:
        """At start-up: take over whatever systemd runs, as it is: nothing is (re)started, and
        idle deadlines are armed for models that now hold no lease."""
        for model, active in states.items():
            if (slot := self._slots.get(model)) is not None:
                self._follow.adopt(slot, active, now)
        self._schedule(now)

    def resync(self, states: dict[str, ActiveState], now: float) -> None:
        """After a lost connection to systemd: its view, read again, is the truth; a stop that
        was lost is asked for again."""
        for model, active in states.items():
            if (slot := self._slots.get(model)) is not None:
                self._follow.resync(slot, active, now)
        self._schedule(now)

    def preload(self, now: float) -> None:
        """At boot: start the preload models that are not running (as an operator's start)."""
        for slot in self._slots.values():
            if slot.info.preload and not slot.info.worker and slot.state in _DOWN:
                if (error := too_large(slot, self._budget, self._total)) is not None:
                    self._fx.warn(f"not preloaded: {error.message}", slot.id)
                    continue
                self._want(slot.id, now)
        self._schedule(now)

    # ------------------------------------------------------------------------------ timers
    def timer(self, key: TimerKey, now: float) -> None:
        kind, model = key
        slot = self._slot(model)
        match kind:
            case "idle":
                if slot.idle_at is not None and now >= slot.idle_at:
                    slot.idle_at = None
                    if slot.state is ModelState.READY and not slot.leases:
                        self._t.stop(slot, now)
            case "drain":
                deadline = slot.drain_deadline
                if slot.state is ModelState.DRAINING and deadline is not None and now >= deadline:
                    self._drain_expired(slot, now)
            case "memory":
                self._swap.memory_expired(model, now)
            case "backoff":
                if slot.state is ModelState.BACKOFF and now >= slot.backoff_until:
                    self._t.set_state(slot, ModelState.FAILED, now)
            case "reservation":
                current = self._reservations.get(model)
                if current is not None and now >= current[1]:
                    holder = current[0]
                    self._fx.warn(
                        f"the reservation by {holder} ran out without renewal; freeing the node", model
                    )
                    self._end_reservation(
                        slot,
                        ReservationError(f"The reservation of this node for '{model}' by {holder} ran out."),
                        now,
                    )
            case _:
                assert_never(kind)
        self._schedule(now)

    def _drain_expired(self, slot: Slot, now: float) -> None:
        self._fx.warn(f"drain_timeout reached with {len(slot.leases)} requests in flight; stopping", slot.id)
        self._t.abort(
            slot,
            UpstreamError(f"The model '{slot.id}' was stopped to make room for another after drain_timeout."),
        )
        self._t.stop(slot, now)

    def engine_hung(self, model: str, reason: str, now: float) -> None:
        """A ready engine stopped answering while its unit runs: end its requests, stop it
        (waiters start it afresh)."""
        slot = self._slot(model)
        if slot.state not in (ModelState.READY, ModelState.DRAINING):
            return
        self._fx.warn(f"the engine stopped answering ({reason}); stopping it", slot.id)
        self._t.abort(
            slot, UpstreamError(f"The engine of '{slot.id}' stopped answering ({reason}); it is restarted.")
        )
        self._t.stop(slot, now)
        self._schedule(now)

    def part_lost(self, model: str, error: SparkError, now: float) -> None:
        """A spanning model's other node no longer holds its part (#15): the model cannot serve
        any more. Its requests end with `error` and it stops (waiters start it afresh, which
        asks every node again)."""
        slot = self._slot(model)
        if slot.state not in (*_SERVING, ModelState.STARTING) or slot.pending == "stop":
            return
        self._fx.warn(f"{error.message} Stopping it.", slot.id)
        slot.last_error = error
        self._t.abort(slot, error)
        self._t.stop(slot, now)
        self._schedule(now)

    def part_wanted(self, model: str, now: float) -> None:
        """Another node this spanning model holds has requests of its own waiting (#15): the
        model makes way as for a local swap — drained (bounded by drain_timeout), stopped, and
        its nodes released; requests for it queue meanwhile and start it again in their turn."""
        slot = self._slot(model)
        if slot.state is not ModelState.READY:
            return
        self._t.drain(slot, now, deadline=now + self._drain_timeout)
        self._schedule(now)

    def memory(self, model: str, available: int, now: float) -> None:
        """A MemAvailable reading while the gate for `model` is open."""
        if self._swap.waits_for_memory(model):
            self._swap.memory(model, available, now)
            self._schedule(now)

    # ------------------------------------------------------------------------------ operators
    def admin_start(self, model: str, now: float) -> None:
        """Start a model as a request would, without holding a lease (it idles afterwards).
        Clears back-off and the hold an operator's stop put on a pinned model."""
        slot = self._slot(model)
        if slot.info.worker:
            self._start_worker(slot, now)
            return
        self._never_fits(slot)
        slot.held_down = False
        slot.failures = 0
        if slot.state is ModelState.BACKOFF:
            self._t.clear_backoff(slot, now, to=ModelState.FAILED)
        self._want(model, now)
        self._schedule(now)

    def admin_stop(self, model: str, now: float, *, force: bool = False) -> None:
        """Unload: after in-flight requests end (the idle path with a zero deadline), or at once."""
        slot = self._slot(model)
        slot.held_down = slot.info.pinned
        self._queue.drop_wanted(model)
        if self._swap.target == model and not self._queue.wants(model):
            self._swap.abandon(now)
        if slot.state in (*_SERVING, ModelState.STARTING):
            if force:
                self._t.abort(slot, UpstreamError(f"The model '{model}' was stopped by an operator."))
            if not slot.leases:
                self._t.stop(slot, now)
            else:
                self._t.drain(slot, now, deadline=None)
        elif slot.state in (ModelState.FAILED, ModelState.BACKOFF):
            self._t.clear_backoff(slot, now, to=ModelState.STOPPED)
        self._schedule(now)

    def end_all(self, error: SparkError) -> None:
        """The daemon stops: every waiting request and every lease ends now with `error` (each
        handler then answers with it, or sends it as the stream's last event)."""
        for slot in self._slots.values():
            self._t.abort(slot, error)
        for entry in self._queue:
            if isinstance(entry, Waiter):
                self._fx.reject(entry.request, error)
            elif isinstance(entry, Reservation):
                self._fx.reservation_settled(entry.model, entry.holder, error)
        self._queue.retain(lambda _: False)

    # ------------------------------------------------------------------------------ other nodes
    def reserve(self, model: str, holder: str, until: float, now: float, *, renew: bool = False) -> bool:
        """Node `holder`, which owns the spanning model `model`, reserves this node for its worker
        part until `until` (a lease it renews by asking again). True once the node is held for
        it; False while the reservation waits its turn (effects.reservation_settled tells when
        it is granted). Raises ReservationError if `model` has no worker part here, or another
        node holds or waits for it."""
        slot = self._worker(model)
        current = self._reservations.get(model)
        if renew and (current is None or current[0] != holder):
            # The owner renews a reservation it believes it holds; this one ended (its lease ran
            # out, or it was released): the worker part it held is gone, so say so.
            raise ReservationError(f"This node holds no reservation for '{model}' by {holder} any more.")
        if current is not None and current[0] != holder:
            raise ReservationError(
                f"This node is reserved for '{model}' by {current[0]}, not {holder}: one node owns a model."
            )
        self._reservations[model] = (holder, until)
        self._fx.set_timer(("reservation", model), until)
        if current is None:
            self._queue.append(Reservation(model, holder, now))
            self._schedule(now)
        return slot.holder == holder

    def release_reservation(self, model: str, holder: str, now: float) -> None:
        """`holder` is done with this node: its worker part stops (if it runs) and the node is
        free once it has. Releasing what is not held (any more) does nothing: an owner may
        release twice, or after the lease ran out."""
        slot = self._worker(model)
        current = self._reservations.get(model)
        if current is None or current[0] != holder:
            return
        self._end_reservation(
            slot,
            ReservationError(f"The reservation of this node for '{model}' was released by {holder}."),
            now,
        )

    def wanted_back(self, model: str) -> bool:
        """This node is held for `model`'s owner while requests of its own wait: the owner is
        told so when it renews, and gives the node back as a local swap would."""
        slot = self._worker(model)
        return slot.holder is not None and any(not isinstance(e, Reservation) for e in self._queue)

    def reservations(self) -> dict[str, tuple[str, float]]:
        """Other nodes' reservations, waiting or held: model → (holder, end of its lease)."""
        return dict(self._reservations)

    def _end_reservation(self, slot: Slot, error: SparkError, now: float) -> None:
        holder, _ = self._reservations.pop(slot.id)
        self._fx.cancel_timer(("reservation", slot.id))
        if self._queue.reservation(slot.id) is not None:
            self._queue.drop_reservation(slot.id)  # a swap for it is called off by _schedule
            self._fx.reservation_settled(slot.id, holder, error)
        slot.holder = None
        if slot.state in (*_SERVING, ModelState.STARTING):
            self._t.stop(slot, now)
        self._schedule(now)

    def _start_worker(self, slot: Slot, now: float) -> None:
        """The owner starts its worker part here, under its granted reservation: the node is
        held for it, so it starts at once, queueing behind nobody."""
        if slot.holder is None:
            raise ReservationError(
                f"'{slot.id}' runs here only as a worker part, started by the node that owns it "
                "under a reservation of this node; none holds it."
            )
        slot.failures = 0
        if slot.state is ModelState.BACKOFF:
            self._t.clear_backoff(slot, now, to=ModelState.FAILED)
        if slot.state in _DOWN:
            self._t.start(slot, now)
        self._schedule(now)

    def _launch(self, slot: Slot, now: float) -> None:
        """There is room for the swap's target: a reservation is granted, anything else starts."""
        reservation = self._queue.reservation(slot.id)
        if reservation is None:
            self._t.start(slot, now)
            return
        slot.holder = reservation.holder
        self._queue.drop_reservation(slot.id)
        self._swap.granted(slot.id)
        if slot.state is ModelState.QUEUED:
            self._t.set_state(slot, ModelState.STOPPED, now)  # held, not running
        self._fx.reservation_settled(slot.id, reservation.holder, None)

    def _worker(self, model: str) -> Slot:
        slot = self._slot(model)
        if not slot.info.worker:
            raise ReservationError(
                f"This node runs no worker part of '{model}': there is nothing to reserve."
            )
        return slot

    def _want(self, model: str, now: float) -> None:
        """Queue a start that no request waits for (an operator, a preload, `Prefer: wait=0`)."""
        if self._slots[model].state in _DOWN and not self._queue.wants(model):
            self._queue.append(Wanted(model, now))

    # ------------------------------------------------------------------------------ views
    def view(self, model: str) -> ModelView:
        slot = self._slot(model)
        return ModelView(
            id=model,
            state=slot.state,
            since=slot.since,
            leases=len(slot.leases),
            waiting=self._queue.waiting_for(model),
            idle_stop_at=slot.idle_at,
            failures=slot.failures,
            backoff_until=slot.backoff_until if slot.state is ModelState.BACKOFF else None,
            last_load_seconds=slot.last_load,
            last_stop_seconds=slot.last_stop,
            wanted=self._queue.wants(model),
            last_error=slot.last_error.message if slot.last_error is not None else None,
            reserved_by=slot.holder,
        )

    def views(self) -> list[ModelView]:
        return [self.view(m) for m in self._slots]

    @property
    def queue_length(self) -> int:
        return self._queue.requests

    def ahead_of(self, model: str) -> int:
        return self._queue.ahead_of(model)

    # ------------------------------------------------------------------------------ learned
    def learned_load(self, model: str, seconds: float) -> None:
        """The typical load time of `model` as learned over its starts (and kept across
        restarts): what estimates (Retry-After, ETA) start from."""
        self._slot(model).typical_load = seconds

    def learned_stop(self, model: str, seconds: float) -> None:
        """The typical time `model` takes to stop: what a swap's estimate counts for it."""
        self._slot(model).stop_time = seconds

    def guessed_load(self, model: str, seconds: float) -> None:
        """Before any history: a load time guessed from the model's size on disk."""
        self._slot(model).load_guess = seconds

    def weights(self, model: str, size: int) -> None:
        """The bytes of its weights on disk: it takes at least as much memory once loaded."""
        self._slot(model).weights = size

    def learned_memory(self, model: str, footprint: int) -> None:
        """What `model` was seen to take once ready, in bytes. Where that is more than its
        declared share (gpu_memory_utilization) it becomes its share: co-residence and the
        memory gate count what it really takes. A footprint is never used to shrink the share:
        one read just after ready is a lower bound of what the engine takes under load."""
        slot = self._slot(model)
        slot.memory = footprint
        if not self._total:
            return
        slot.share = max(slot.info.fraction, footprint / self._total)
        if footprint > WELL_ABOVE * slot.info.fraction * self._total:
            declared = slot.info.fraction * self._total / GIB
            self._fx.warn(
                f"it takes {footprint / GIB:.1f} GiB once ready, well above its declared"
                f" gpu_memory_utilization {slot.info.fraction:g} ({declared:.1f} GiB); it is"
                " scheduled by what it takes, and its catalog entry should say so",
                model,
            )

    def _never_fits(self, slot: Slot) -> None:
        """Refuse a model this host can never hold, before anything is evicted for it (one that
        runs anyway, started by hand or adopted, is served)."""
        if slot.state not in (*_DOWN, ModelState.BACKOFF):
            return
        if (error := too_large(slot, self._budget, self._total)) is not None:
            raise error

    # ------------------------------------------------------------------------------ estimates
    def eta(self, model: str, now: float) -> Eta:
        """How long until `model` is likely ready: what stands before it, then its load."""
        self._slot(model)
        return estimate_ready(model, self._line(now), now)

    def etas(self, now: float) -> dict[str, Eta]:
        """The estimate of every model ready, starting, backing off or waiting, in one walk."""
        return estimate_all(self._line(now), now)

    def _line(self, now: float) -> Line:
        swap = self._swap
        return Line(
            self._slots,
            self._queue,
            swap.target,
            self._budget,
            self._drain_timeout,
            gate_time=swap.gate_time or 0.0,
            gate_left=swap.gate_left(now),
        )

    def load_guess(self, model: str) -> float | None:
        """Its load time guessed from its size on disk while no start of it was seen; else None."""
        slot = self._slot(model)
        return load_time(slot) if load_guessed(slot) else None

    def state(self, model: str) -> ModelState:
        return self._slot(model).state

    def retry_after(self, model: str, now: float) -> float:
        return self.eta(model, now).seconds

    # ------------------------------------------------------------------------------ the core
    def _schedule(self, now: float) -> None:
        """Settle what can be settled after any event. Idempotent."""
        self._grant_ready(now)
        self._swap.progress(now)
        if self._swap.target is None:
            self._pick_next(now)
        for slot in self._slots.values():
            if slot.state is ModelState.DRAINING and not slot.leases:
                self._t.stop(slot, now)
        self._arm_idle(now)
        self._restore_pinned(now)

    def _grant_ready(self, now: float) -> None:
        def still_waiting(entry: Waiter | Wanted | Reservation) -> bool:
            if isinstance(entry, Reservation):
                return True  # granted by _pick_next, once the node is free
            slot = self._slots[entry.model]
            if not slot.can_serve:
                return True
            if isinstance(entry, Waiter):
                self._t.lease(slot, entry.request, now)
                self._fx.grant(entry.request)
            return False  # an operator's start is satisfied by readiness

        self._queue.retain(still_waiting)

    def _pick_next(self, now: float) -> None:
        """Start what the oldest waiters need, in order; the first that does not fit becomes
        the swap target and nothing behind it starts until it has."""
        for entry in self._queue:
            slot = self._slots[entry.model]
            reservation = isinstance(entry, Reservation)
            if not reservation and slot.state not in _DOWN:
                continue  # starting, ready (maybe at max_concurrent), or on its way somewhere
            if fits(slot, self._swap.active(), self._budget):
                self._launch(slot, now)
                continue
            self._swap.begin(slot, now)
            return

    def _arm_idle(self, now: float) -> None:
        for slot in self._slots.values():
            self._arm_idle_slot(slot, now)

    def _arm_idle_slot(self, slot: Slot, now: float) -> None:
        wanted = idle_stop_wanted(slot, self._queue.wants(slot.id))
        if wanted and slot.idle_at is None:
            if slot.info.idle_timeout <= 0:
                self._t.stop(slot, now)
            else:
                self._t.arm_idle(slot, now)
        elif not wanted:
            self._t.disarm_idle(slot)

    def _restore_pinned(self, now: float) -> None:
        """A pinned model that was evicted comes back when it fits again and nobody waits."""
        if self._queue or self._swap.target is not None:
            return
        for slot in self._slots.values():
            if (
                slot.info.pinned
                and slot.state is ModelState.STOPPED
                and not slot.held_down
                and fits(slot, self._swap.active(), self._budget)
                and too_large(slot, self._budget, self._total) is None
            ):
                self._t.start(slot, now)

    # ------------------------------------------------------------------------------ helpers
    def _slot(self, model: str) -> Slot:
        try:
            return self._slots[model]
        except KeyError:
            raise UnknownModelError(f"The model '{model}' does not exist.") from None
