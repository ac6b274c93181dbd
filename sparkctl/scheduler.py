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
  sparkctl did not ask for (a manual start, a crash) becomes the scheduler's view.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, assert_never

from .errors import (
    ModelBackoffError,
    ModelLoadingError,
    ModelStartFailedError,
    ModelStartTimeoutError,
    QueueFullError,
    SparkError,
    UnknownModelError,
    UpstreamError,
)


class ModelState(StrEnum):
    STOPPED = "stopped"
    QUEUED = "queued"  # wanted, but waiting for others to drain and stop, or for memory
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # finishing in-flight requests before a stop; new ones queue
    STOPPING = "stopping"
    FAILED = "failed"
    BACKOFF = "backoff"


TimerKind = Literal["idle", "drain", "memory", "backoff"]
TimerKey = tuple[TimerKind, str]

# Back-off after the second consecutive failure: 30 s, doubling, at most 10 minutes.
BACKOFF_BASE = 30.0
BACKOFF_MAX = 600.0
DEFAULT_LOAD_ESTIMATE = 30.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the scheduler needs to know about a catalog model."""

    id: str
    fraction: float  # gpu_memory_utilization: its share of the memory budget
    exclusive: bool = False
    pinned: bool = False
    preload: bool = False
    idle_timeout: float = 1200.0  # math.inf: never
    max_concurrent: int = 0  # 0: unlimited
    start_timeout: float = 1800.0


class Effects(Protocol):
    def start_unit(self, model: str) -> None: ...
    def stop_unit(self, model: str) -> None: ...
    def grant(self, request: int) -> None: ...
    def reject(self, request: int, error: SparkError) -> None: ...
    def abort_leases(self, model: str, leases: list[int], error: SparkError) -> None: ...
    def set_timer(self, key: TimerKey, at: float) -> None: ...
    def cancel_timer(self, key: TimerKey) -> None: ...
    def watch_memory(self, model: str, need_bytes: int) -> None: ...
    def unwatch_memory(self, model: str) -> None: ...
    def state_changed(self, model: str, state: ModelState) -> None: ...
    def warn(self, message: str, model: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Granted:
    """The request holds a lease on a ready model now."""


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits; effects.grant or effects.reject will settle it."""


GRANTED = Granted()
QUEUED = Queued()


@dataclass(slots=True)
class _Slot:
    info: ModelInfo
    state: ModelState = ModelState.STOPPED
    since: float = 0.0
    leases: set[int] = field(default_factory=set)
    failures: int = 0
    backoff_until: float = 0.0
    last_error: SparkError | None = None
    idle_at: float | None = None  # when the idle stop fires, if armed
    drain_deadline: float | None = None
    load_started: float | None = None
    last_load: float | None = None  # seconds the last successful start took
    pending: Literal["start", "stop"] | None = None  # a job we asked systemd for
    held_down: bool = False  # stopped by an operator: pinned models stay down until started


@dataclass(frozen=True, slots=True)
class ModelView:
    """A read-only picture of one model, for status pages and /v1/models."""

    id: str
    state: ModelState
    since: float
    leases: int
    waiting: int
    idle_stop_at: float | None
    failures: int
    backoff_until: float | None
    last_load_seconds: float | None


@dataclass(slots=True)
class _Waiter:
    request: int
    model: str
    since: float


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
        self._slots = {m.id: _Slot(m) for m in models}
        self._fx = effects
        self._budget = memory_budget
        self._drain_timeout = drain_timeout
        self._memory_wait = memory_wait
        self._queue_limit = queue_limit
        self._total_memory = total_memory
        self._queue: deque[_Waiter] = deque()
        self._target: str | None = None  # the swap in progress, if any
        self._freed_for_target = False  # a stop happened for it: gate on memory before starting
        self._gate_open: str | None = None  # model whose start waits for memory

    # ------------------------------------------------------------------------------ requests
    def acquire(self, request: int, model: str, now: float, *, wait: bool = True) -> Granted | Queued:
        """Ask for a lease on `model`. Raises a SparkError when the request cannot be served."""
        slot = self._slot(model)
        if slot.state is ModelState.BACKOFF:
            if now < slot.backoff_until:
                raise self._backoff_error(slot, now)
            self._set_state(slot, ModelState.FAILED, now)
        if self._can_serve(slot) and not self._queued_for(model):
            self._lease(slot, request)
            return GRANTED
        if not wait:
            self._want(model, now)  # not waiting, but the model should come: a retry finds it
            self._schedule(now)
            raise ModelLoadingError(
                f"The model '{model}' is {slot.state.value}; not waiting because the request said so.",
                retry_after=self._estimate(slot, now),
            )
        if len(self._queue) >= self._queue_limit:
            raise QueueFullError(
                f"Too many requests are waiting ({self._queue_limit}); try again shortly.",
                retry_after=self._estimate(slot, now),
            )
        self._queue.append(_Waiter(request, model, now))
        self._schedule(now)
        return QUEUED

    def release(self, request: int, model: str, now: float) -> None:
        """The lease's response ended (completely, with an error, or by client disconnect)."""
        slot = self._slot(model)
        if request not in slot.leases:
            return
        slot.leases.discard(request)
        self._schedule(now)

    def cancel(self, request: int, now: float) -> None:
        """A waiter gave up (its client went away, or it timed out) before being granted."""
        before = len(self._queue)
        self._queue = deque(w for w in self._queue if w.request != request)
        if len(self._queue) != before:
            self._schedule(now)

    # ------------------------------------------------------------------------------ systemd
    def start_finished(self, model: str, result: str, unit_result: str, now: float, detail: str = "") -> None:
        """Our start job ended: result "done" means ready (the unit probes health). On failure
        `unit_result` is the unit's Result (exit-code, timeout, …) and `detail` what the unit
        said last (its final log line), which waiters see."""
        slot = self._slot(model)
        if slot.pending == "start":
            slot.pending = None
        if result == "done":
            if slot.state in (ModelState.STARTING, ModelState.QUEUED, ModelState.STOPPED):
                self._became_ready(slot, now)
        elif result == "canceled":
            # Someone else's job replaced ours (a conflicting manual start): not the model's fault.
            if slot.state is ModelState.STARTING:
                self._set_state(slot, ModelState.STOPPED, now)
        else:
            self._start_failed(slot, unit_result, detail, now)
        self._schedule(now)

    def stop_finished(self, model: str, now: float) -> None:
        slot = self._slot(model)
        if slot.pending == "stop":
            slot.pending = None
        if slot.state is ModelState.STOPPING:
            self._stopped(slot, now)
        self._schedule(now)

    def unit_state(self, model: str, active_state: str, now: float) -> None:
        """systemd's view changed (PropertiesChanged): follow it, whoever caused the change."""
        slot = self._slot(model)
        s = slot.state
        if active_state == "active":
            if (
                s
                in (
                    ModelState.STARTING,
                    ModelState.STOPPED,
                    ModelState.FAILED,
                    ModelState.QUEUED,
                    ModelState.BACKOFF,
                )
                and slot.pending != "stop"
            ):
                self._became_ready(slot, now)  # ours, or started by hand: either way it serves
        elif active_state == "activating":
            if (
                s in (ModelState.STOPPED, ModelState.FAILED, ModelState.BACKOFF, ModelState.QUEUED)
                and slot.pending is None
            ):
                self._set_state(slot, ModelState.STARTING, now)
                slot.load_started = now
        elif active_state in ("inactive", "failed"):
            if s in (ModelState.READY, ModelState.DRAINING):
                # It died (or was stopped behind our back) while serving.
                self._abort(slot, UpstreamError(f"The model '{model}' stopped while serving this request."))
                if active_state == "failed":
                    slot.failures += 1
                    slot.last_error = UpstreamError(f"The model '{model}' crashed.")
                    self._set_state(slot, ModelState.FAILED, now)
                else:
                    self._stopped(slot, now)
            elif s is ModelState.STOPPING and slot.pending is None:
                self._stopped(slot, now)
            elif s is ModelState.STARTING and slot.pending is None:
                # A start we did not issue failed (a manual start, or a Conflicts= stop).
                self._set_state(
                    slot, ModelState.FAILED if active_state == "failed" else ModelState.STOPPED, now
                )
        elif (
            active_state == "deactivating"
            and s in (ModelState.READY, ModelState.DRAINING)
            and slot.pending is None
        ):
            self._abort(slot, UpstreamError(f"The model '{model}' is being stopped."))
            self._set_state(slot, ModelState.STOPPING, now)
        self._schedule(now)

    def adopt(self, states: dict[str, str], now: float) -> None:
        """At start-up: take over whatever systemd runs, as it is: nothing is (re)started, and
        idle deadlines are armed for models that now hold no lease."""
        for model, active_state in states.items():
            slot = self._slots.get(model)
            if slot is None:
                continue
            match active_state:
                case "active" | "reloading":
                    self._set_state(slot, ModelState.READY, now)
                case "activating":
                    self._set_state(slot, ModelState.STARTING, now)
                    slot.load_started = now
                case "deactivating":
                    self._set_state(slot, ModelState.STOPPING, now)
                case "failed":
                    self._set_state(slot, ModelState.FAILED, now)
                case _:
                    pass
        self._schedule(now)

    def preload(self, now: float) -> None:
        """At boot: start the preload models that are not running (as an operator's start)."""
        for slot in self._slots.values():
            if slot.info.preload and slot.state in (ModelState.STOPPED, ModelState.FAILED):
                self._want(slot.info.id, now)
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
                        self._stop(slot, now)
            case "drain":
                if (
                    slot.state is ModelState.DRAINING
                    and slot.drain_deadline is not None
                    and now >= slot.drain_deadline
                ):
                    self._fx.warn(
                        f"drain_timeout reached with {len(slot.leases)} requests in flight; stopping", model
                    )
                    self._abort(
                        slot,
                        UpstreamError(
                            f"The model '{model}' was stopped to make room for another after drain_timeout."
                        ),
                    )
                    self._stop(slot, now)
            case "memory":
                if self._gate_open == model:
                    self._fx.warn(
                        "memory_wait expired before enough memory was available; starting anyway", model
                    )
                    self._close_gate()
                    self._start(slot, now)
            case "backoff":
                if slot.state is ModelState.BACKOFF and now >= slot.backoff_until:
                    self._set_state(slot, ModelState.FAILED, now)
            case _:
                assert_never(kind)
        self._schedule(now)

    def memory(self, model: str, available: int, now: float) -> None:
        """A MemAvailable reading while the gate for `model` is open."""
        if self._gate_open != model:
            return
        if available >= self._need_bytes(self._slot(model).info):
            self._close_gate()
            self._start(self._slot(model), now)
        self._schedule(now)

    # ------------------------------------------------------------------------------ operators
    def admin_start(self, model: str, now: float) -> None:
        """Start a model as a request would, without holding a lease (it idles afterwards).
        Clears back-off and the hold an operator's stop put on a pinned model."""
        slot = self._slot(model)
        slot.held_down = False
        slot.failures = 0
        if slot.state is ModelState.BACKOFF:
            self._fx.cancel_timer(("backoff", model))
            self._set_state(slot, ModelState.FAILED, now)
        self._want(model, now)
        self._schedule(now)

    def admin_stop(self, model: str, now: float, *, force: bool = False) -> None:
        """Unload: after in-flight requests end (the idle path with a zero deadline), or at once."""
        slot = self._slot(model)
        slot.held_down = slot.info.pinned
        self._queue = deque(w for w in self._queue if not (w.model == model and w.request == -1))
        if self._target == model and not self._queued_for(model):
            self._abandon_target(now)
        if slot.state in (ModelState.READY, ModelState.DRAINING, ModelState.STARTING):
            if force:
                self._abort(slot, UpstreamError(f"The model '{model}' was stopped by an operator."))
            if not slot.leases:
                self._stop(slot, now)
            else:
                self._drain(slot, now, deadline=None)
        elif slot.state in (ModelState.FAILED, ModelState.BACKOFF):
            self._fx.cancel_timer(("backoff", model))
            self._set_state(slot, ModelState.STOPPED, now)
        self._schedule(now)

    def _want(self, model: str, now: float) -> None:
        """Queue a start that no request waits for (an operator, a preload, `Prefer: wait=0`)."""
        slot = self._slots[model]
        if slot.state in (ModelState.STOPPED, ModelState.FAILED) and not self._queued_for(model):
            self._queue.append(_Waiter(-1, model, now))  # -1: nobody to grant

    # ------------------------------------------------------------------------------ views
    def view(self, model: str) -> ModelView:
        slot = self._slot(model)
        return ModelView(
            id=model,
            state=slot.state,
            since=slot.since,
            leases=len(slot.leases),
            waiting=sum(1 for w in self._queue if w.model == model and w.request >= 0),
            idle_stop_at=slot.idle_at,
            failures=slot.failures,
            backoff_until=slot.backoff_until if slot.state is ModelState.BACKOFF else None,
            last_load_seconds=slot.last_load,
        )

    def views(self) -> list[ModelView]:
        return [self.view(m) for m in self._slots]

    @property
    def queue_length(self) -> int:
        return sum(1 for w in self._queue if w.request >= 0)

    def state(self, model: str) -> ModelState:
        return self._slot(model).state

    def retry_after(self, model: str, now: float) -> float:
        return self._estimate(self._slot(model), now)

    # ------------------------------------------------------------------------------ the core
    def _schedule(self, now: float) -> None:
        """Settle what can be settled after any event. Idempotent."""
        self._grant_ready(now)
        self._progress_target(now)
        if self._target is None:
            self._pick_next(now)
        self._drain_or_stop_finished_models(now)
        self._arm_idle(now)
        self._restore_pinned(now)

    def _grant_ready(self, now: float) -> None:
        kept: deque[_Waiter] = deque()
        for w in self._queue:
            slot = self._slots[w.model]
            if self._can_serve(slot):
                if w.request >= 0:
                    self._lease(slot, w.request)
                    self._fx.grant(w.request)
                continue  # an operator's start waiter is satisfied by readiness
            kept.append(w)
        self._queue = kept

    def _pick_next(self, now: float) -> None:
        """Start what the oldest waiters need, in order; the first that does not fit becomes
        the swap target and nothing behind it starts until it has."""
        for w in list(self._queue):
            slot = self._slots[w.model]
            if slot.state not in (ModelState.STOPPED, ModelState.FAILED):
                continue  # starting, ready (maybe at max_concurrent), or on its way somewhere
            if self._fits(slot.info, self._active()):
                self._start(slot, now)
                continue
            self._target = w.model
            self._freed_for_target = False
            self._set_state(slot, ModelState.QUEUED, now)
            self._progress_target(now)
            return

    def _progress_target(self, now: float) -> None:
        target = self._target
        if target is None:
            return
        slot = self._slots[target]
        if slot.state not in (ModelState.QUEUED, ModelState.STOPPED, ModelState.FAILED):
            self._target = None  # it started (or was taken over): the swap is over
            return
        if not self._queued_for(target):
            self._abandon_target(now)
            return
        if self._gate_open == target:
            return
        in_way = self._in_the_way(slot.info)
        for victim in in_way:
            if victim.state is ModelState.READY:
                self._drain(victim, now, deadline=now + self._drain_timeout)
        if in_way:
            return
        if self._freed_for_target and self._total_memory:
            self._gate_open = target
            self._fx.watch_memory(target, self._need_bytes(slot.info))
            self._fx.set_timer(("memory", target), now + self._memory_wait)
            return
        self._start(slot, now)

    def _abandon_target(self, now: float) -> None:
        """Nobody waits for the swap target any more: let its victims serve again."""
        target = self._target
        self._target = None
        if target is None:
            return
        if self._gate_open == target:
            self._close_gate()
        slot = self._slots[target]
        if slot.state is ModelState.QUEUED:
            self._set_state(slot, ModelState.STOPPED, now)
        for victim in self._slots.values():
            if victim.state is ModelState.DRAINING and victim.drain_deadline is not None:
                self._fx.cancel_timer(("drain", victim.info.id))
                victim.drain_deadline = None
                self._set_state(victim, ModelState.READY, now)

    def _in_the_way(self, target: ModelInfo) -> list[_Slot]:
        """The running models that must go for `target` to fit: all of them for an exclusive
        target; otherwise any exclusive one, then unpinned ones (idle first, largest first),
        then pinned ones only if it still does not fit."""
        active = self._active()
        if target.exclusive or any(s.info.exclusive for s in active):
            return active
        if self._fits(target, active):
            return []
        victims: list[_Slot] = [s for s in active if s.state is ModelState.STOPPING]
        rest = [s for s in active if s.state is not ModelState.STOPPING]
        rest.sort(key=lambda s: (s.info.pinned, bool(s.leases), -s.info.fraction, s.info.id))
        for s in rest:
            if self._fits(target, [a for a in active if a not in victims]):
                break
            victims.append(s)
        return victims

    def _drain_or_stop_finished_models(self, now: float) -> None:
        for slot in self._slots.values():
            if slot.state is ModelState.DRAINING and not slot.leases:
                self._stop(slot, now)

    def _arm_idle(self, now: float) -> None:
        for slot in self._slots.values():
            wanted = (
                slot.state is ModelState.READY
                and not slot.leases
                and not slot.info.pinned
                and not math.isinf(slot.info.idle_timeout)
                and not self._queued_for(slot.info.id)
            )
            if wanted and slot.idle_at is None:
                if slot.info.idle_timeout <= 0:
                    self._stop(slot, now)
                    continue
                slot.idle_at = now + slot.info.idle_timeout
                self._fx.set_timer(("idle", slot.info.id), slot.idle_at)
            elif not wanted and slot.idle_at is not None:
                slot.idle_at = None
                self._fx.cancel_timer(("idle", slot.info.id))

    def _restore_pinned(self, now: float) -> None:
        """A pinned model that was evicted comes back when it fits again and nobody waits."""
        if self._queue or self._target is not None:
            return
        for slot in self._slots.values():
            if (
                slot.info.pinned
                and slot.state is ModelState.STOPPED
                and not slot.held_down
                and self._fits(slot.info, self._active())
            ):
                self._start(slot, now)

    # ------------------------------------------------------------------------------ transitions
    def _start(self, slot: _Slot, now: float) -> None:
        slot.pending = "start"
        slot.load_started = now
        self._set_state(slot, ModelState.STARTING, now)
        self._fx.start_unit(slot.info.id)

    def _stop(self, slot: _Slot, now: float) -> None:
        if slot.drain_deadline is not None:
            self._fx.cancel_timer(("drain", slot.info.id))
            slot.drain_deadline = None
        if slot.idle_at is not None:
            self._fx.cancel_timer(("idle", slot.info.id))
            slot.idle_at = None
        slot.pending = "stop"
        self._set_state(slot, ModelState.STOPPING, now)
        self._fx.stop_unit(slot.info.id)

    def _drain(self, slot: _Slot, now: float, deadline: float | None) -> None:
        if slot.state is not ModelState.DRAINING:
            self._set_state(slot, ModelState.DRAINING, now)
        if deadline is not None and slot.drain_deadline is None:
            slot.drain_deadline = deadline
            self._fx.set_timer(("drain", slot.info.id), deadline)
        if not slot.leases:
            self._stop(slot, now)

    def _stopped(self, slot: _Slot, now: float) -> None:
        if self._target is not None and slot.info.id != self._target:
            self._freed_for_target = True  # its memory comes back over the next moments
        self._set_state(slot, ModelState.STOPPED, now)

    def _became_ready(self, slot: _Slot, now: float) -> None:
        if slot.load_started is not None and slot.state is ModelState.STARTING:
            slot.last_load = now - slot.load_started
        slot.load_started = None
        slot.failures = 0
        slot.last_error = None
        self._set_state(slot, ModelState.READY, now)

    def _start_failed(self, slot: _Slot, unit_result: str, detail: str, now: float) -> None:
        model = slot.info.id
        slot.failures += 1
        hint = f"journalctl -u sparkctl-{model}.service"
        error: SparkError
        if unit_result == "timeout":
            error = ModelStartTimeoutError(
                f"The model '{model}' did not become ready within its start timeout.",
                retry_after=BACKOFF_BASE,
                hint=hint,
            )
        else:
            said = f": {detail}" if detail else ""
            error = ModelStartFailedError(
                f"The model '{model}' failed to start ({unit_result or 'failed'}){said}; see `{hint}`.",
                retry_after=BACKOFF_BASE,
                hint=hint,
            )
        slot.last_error = error
        for w in [w for w in self._queue if w.model == model]:
            if w.request >= 0:
                self._fx.reject(w.request, error)
        self._queue = deque(w for w in self._queue if w.model != model)
        if self._target == model:
            self._target = None
        if slot.failures >= 2:
            delay = min(BACKOFF_BASE * 2 ** (slot.failures - 2), BACKOFF_MAX)
            slot.backoff_until = now + delay
            self._set_state(slot, ModelState.BACKOFF, now)
            self._fx.set_timer(("backoff", model), slot.backoff_until)
        else:
            self._set_state(slot, ModelState.FAILED, now)

    def _lease(self, slot: _Slot, request: int) -> None:
        slot.leases.add(request)
        if slot.idle_at is not None:
            slot.idle_at = None
            self._fx.cancel_timer(("idle", slot.info.id))

    def _abort(self, slot: _Slot, error: SparkError) -> None:
        if slot.leases:
            self._fx.abort_leases(slot.info.id, sorted(slot.leases), error)
            slot.leases.clear()

    def _close_gate(self) -> None:
        if self._gate_open is not None:
            self._fx.unwatch_memory(self._gate_open)
            self._fx.cancel_timer(("memory", self._gate_open))
            self._gate_open = None

    def _set_state(self, slot: _Slot, state: ModelState, now: float) -> None:
        if slot.state is not state:
            slot.state = state
            slot.since = now
            if state is not ModelState.DRAINING:
                slot.drain_deadline = None
            self._fx.state_changed(slot.info.id, state)

    # ------------------------------------------------------------------------------ helpers
    def _slot(self, model: str) -> _Slot:
        try:
            return self._slots[model]
        except KeyError:
            raise UnknownModelError(f"The model '{model}' does not exist.") from None

    def _can_serve(self, slot: _Slot) -> bool:
        if slot.state is not ModelState.READY:
            return False
        limit = slot.info.max_concurrent
        return not limit or len(slot.leases) < limit

    def _queued_for(self, model: str) -> bool:
        return any(w.model == model for w in self._queue)

    def _active(self) -> list[_Slot]:
        """Models that hold (or are about to hold) GPU memory."""
        return [
            s
            for s in self._slots.values()
            if s.state in (ModelState.STARTING, ModelState.READY, ModelState.DRAINING, ModelState.STOPPING)
        ]

    def _fits(self, info: ModelInfo, active: list[_Slot]) -> bool:
        others = [s for s in active if s.info.id != info.id]
        if not others:
            return True
        if info.exclusive or any(s.info.exclusive for s in others):
            return False
        return sum(s.info.fraction for s in others) + info.fraction <= self._budget + 1e-9

    def _need_bytes(self, info: ModelInfo) -> int:
        return int(info.fraction * self._total_memory)

    def _estimate(self, slot: _Slot, now: float) -> float:
        """Seconds until the model is likely ready: learned load time, minus what has passed."""
        if slot.state is ModelState.BACKOFF:
            return max(1.0, slot.backoff_until - now)
        load = slot.last_load or DEFAULT_LOAD_ESTIMATE
        if slot.state is ModelState.STARTING and slot.load_started is not None:
            return max(1.0, load - (now - slot.load_started))
        return max(1.0, load)

    def _backoff_error(self, slot: _Slot, now: float) -> ModelBackoffError:
        last = slot.last_error.message if slot.last_error else "it failed to start"
        return ModelBackoffError(
            f"The model '{slot.info.id}' failed {slot.failures} times in a row and is backing off: {last}",
            retry_after=max(1.0, slot.backoff_until - now),
            hint=f"journalctl -u sparkctl-{slot.info.id}.service; "
            f"`sparkctl start {slot.info.id}` retries now",
        )
