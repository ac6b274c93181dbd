"""One model's place in the scheduler, the primitive transitions that change it, and the
arithmetic of what fits beside what.

Each transition changes one slot and emits the effects that go with it (a start job, a timer, a
state event). Which transition to make, and when, is the policy in `scheduler.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from sparkctl.core.states import Effects, ModelInfo, ModelState
from sparkctl.errors import (
    ModelBackoffError,
    ModelStartFailedError,
    ModelStartTimeoutError,
    ModelTooLargeError,
    SparkError,
)

# Back-off after the second consecutive failure: 30 s, doubling, at most 10 minutes.
BACKOFF_BASE = 30.0
BACKOFF_MAX = 600.0
DEFAULT_LOAD_ESTIMATE = 30.0
# Memory fractions are summed as floats; a catalog that fills the budget exactly must fit.
EPSILON = 1e-9
GIB = 1024**3


@dataclass(slots=True)
class Slot:
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
    last_load: float | None = None  # seconds its last successful start took
    typical_load: float | None = None  # seconds a start takes, learned over its starts
    load_guess: float | None = None  # before any history: a guess from its size on disk
    stop_time: float | None = None  # seconds a stop takes, learned (STOPPING to STOPPED)
    stop_started: float | None = None
    last_stop: float | None = None  # seconds the last stop took
    # Bytes: what it was seen to take once ready (learned), and its weights on disk. A model
    # holds at least either; `share` is its part of the memory for co-residence: the declared
    # gpu_memory_utilization, or the learned footprint where that is larger.
    memory: int = 0
    weights: int = 0
    share: float = 0.0
    lease_since: dict[int, float] = field(default_factory=dict)  # when each lease began
    request_time: float | None = None  # how long its requests last (a moving average)
    pending: Literal["start", "stop"] | None = None  # a job we asked systemd for
    held_down: bool = False  # stopped by an operator: pinned models stay down until started
    # A worker part (#15): the node whose granted reservation holds this node for it. The node
    # is its tenant from the grant until the release, whether the worker runs or not.
    holder: str | None = None

    def __post_init__(self) -> None:
        self.share = self.info.fraction

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def can_serve(self) -> bool:
        """Ready, and below its max_concurrent."""
        if self.state is not ModelState.READY:
            return False
        limit = self.info.max_concurrent
        return not limit or len(self.leases) < limit

    @property
    def holds_memory(self) -> bool:
        """It holds (or is about to hold) GPU memory, or the node is reserved for it."""
        return self.holder is not None or self.state in (
            ModelState.STARTING,
            ModelState.READY,
            ModelState.DRAINING,
            ModelState.STOPPING,
        )


class Transitions:
    """The primitive changes of one slot, each with its effects."""

    def __init__(self, effects: Effects) -> None:
        self.fx = effects

    def set_state(self, slot: Slot, state: ModelState, now: float) -> None:
        if slot.state is not state:
            slot.state = state
            slot.since = now
            if state is not ModelState.DRAINING:
                slot.drain_deadline = None
            self.fx.state_changed(slot.id, state)

    def start(self, slot: Slot, now: float) -> None:
        slot.pending = "start"
        slot.load_started = now
        self.set_state(slot, ModelState.STARTING, now)
        self.fx.start_unit(slot.id)

    def stop(self, slot: Slot, now: float) -> None:
        if slot.drain_deadline is not None:
            self.fx.cancel_timer(("drain", slot.id))
            slot.drain_deadline = None
        self.disarm_idle(slot)
        slot.pending = "stop"
        slot.stop_started = now
        self.set_state(slot, ModelState.STOPPING, now)
        self.fx.stop_unit(slot.id)

    def drain(self, slot: Slot, now: float, deadline: float | None) -> None:
        if slot.state is not ModelState.DRAINING:
            self.set_state(slot, ModelState.DRAINING, now)
        if deadline is not None and slot.drain_deadline is None:
            slot.drain_deadline = deadline
            self.fx.set_timer(("drain", slot.id), deadline)
        if not slot.leases:
            self.stop(slot, now)

    def undrain(self, slot: Slot, now: float) -> None:
        """A drain for a swap that no longer happens: serve again."""
        self.fx.cancel_timer(("drain", slot.id))
        slot.drain_deadline = None
        self.set_state(slot, ModelState.READY, now)

    def became_ready(self, slot: Slot, now: float) -> None:
        if slot.load_started is not None and slot.state is ModelState.STARTING:
            slot.last_load = now - slot.load_started
        slot.load_started = None
        slot.failures = 0
        slot.last_error = None
        self.set_state(slot, ModelState.READY, now)

    def failed(self, slot: Slot, error: SparkError, now: float) -> None:
        """A start failed: the second failure in a row and later ones mean back-off."""
        slot.failures += 1
        slot.last_error = error
        if slot.failures >= 2:
            delay = min(BACKOFF_BASE * 2 ** (slot.failures - 2), BACKOFF_MAX)
            slot.backoff_until = now + delay
            self.set_state(slot, ModelState.BACKOFF, now)
            self.fx.set_timer(("backoff", slot.id), slot.backoff_until)
        else:
            self.set_state(slot, ModelState.FAILED, now)

    def clear_backoff(self, slot: Slot, now: float, to: ModelState) -> None:
        self.fx.cancel_timer(("backoff", slot.id))
        self.set_state(slot, to, now)

    def lease(self, slot: Slot, request: int, now: float) -> None:
        slot.leases.add(request)
        slot.lease_since[request] = now
        self.disarm_idle(slot)

    def unlease(self, slot: Slot, request: int, now: float) -> None:
        """A lease ended: how long it lasted feeds the drain estimate of the model's requests."""
        slot.leases.discard(request)
        if (since := slot.lease_since.pop(request, None)) is not None:
            took = now - since
            slot.request_time = took if slot.request_time is None else 0.8 * slot.request_time + 0.2 * took

    def abort(self, slot: Slot, error: SparkError) -> None:
        if slot.leases:
            self.fx.abort_leases(slot.id, sorted(slot.leases), error)
            slot.leases.clear()
            slot.lease_since.clear()

    def arm_idle(self, slot: Slot, now: float) -> None:
        slot.idle_at = now + slot.info.idle_timeout
        self.fx.set_timer(("idle", slot.id), slot.idle_at)

    def disarm_idle(self, slot: Slot) -> None:
        if slot.idle_at is not None:
            slot.idle_at = None
            self.fx.cancel_timer(("idle", slot.id))


# ------------------------------------------------------------------------------------ placement
def fits(slot: Slot, active: list[Slot], budget: float) -> bool:
    """Whether `slot` can run beside the `active` models: nobody exclusive, the budget kept."""
    others = [s for s in active if s.id != slot.id]
    if not others:
        return True
    if slot.info.exclusive or any(s.info.exclusive for s in others):
        return False
    return sum(s.share for s in others) + slot.share <= budget + EPSILON


def in_the_way(target: Slot, active: list[Slot], budget: float) -> list[Slot]:
    """The running models that must go for `target` to fit: all of them for an exclusive
    target; otherwise any exclusive one, then unpinned ones (idle first, largest first),
    then pinned ones only if it still does not fit."""
    if target.info.exclusive or any(s.info.exclusive for s in active):
        return active
    if fits(target, active, budget):
        return []
    victims: list[Slot] = [s for s in active if s.state is ModelState.STOPPING]
    rest = [s for s in active if s.state is not ModelState.STOPPING]
    rest.sort(key=lambda s: (s.info.pinned, bool(s.leases), -s.share, s.id))
    for s in rest:
        if fits(target, [a for a in active if a not in victims], budget):
            break
        victims.append(s)
    return victims


def too_large(slot: Slot, budget: float, total: int) -> ModelTooLargeError | None:
    """Why this host (`total` bytes, 0 if unknown) can never hold the model, if it cannot: the
    weights its engine loads exceed the most memory it may have (the budget, or its own declared
    share where that is more: an exclusive model runs alone), or it was seen to take more than
    the host has."""
    if not total:
        return None
    if slot.weights > max(budget, slot.info.fraction) * total:
        why = f"its weights take {slot.weights / GIB:.1f} GiB on disk"
    elif slot.memory > total:
        why = f"it was seen to take {slot.memory / GIB:.1f} GiB once loaded"
    else:
        return None
    return ModelTooLargeError(
        f"The model '{slot.id}' can never fit this host: {why}, and the memory budget is"
        f" {max(budget, slot.info.fraction) * total / GIB:.1f} GiB (scheduler.memory_budget {budget:g}"
        f" of {total / GIB:.1f} GiB).",
        hint="a smaller quantisation of it, or a host with more memory",
    )


def idle_stop_wanted(slot: Slot, queued: bool) -> bool:
    """A ready model with no lease, not pinned, not kept forever, nobody queued for it, and not a
    worker part (its owner node stops it, with the whole model)."""
    return (
        slot.state is ModelState.READY
        and not slot.info.worker
        and not slot.leases
        and not slot.info.pinned
        and not math.isinf(slot.info.idle_timeout)
        and not queued
    )


# ------------------------------------------------------------------------ what clients are told
def estimate(slot: Slot, now: float) -> float:
    """Seconds until the model is likely ready: learned load time, minus what has passed."""
    if slot.state is ModelState.BACKOFF:
        return max(1.0, slot.backoff_until - now)
    load = load_time(slot)
    if slot.state is ModelState.STARTING and slot.load_started is not None:
        return max(1.0, load - (now - slot.load_started))
    return max(1.0, load)


def load_time(slot: Slot) -> float:
    """Seconds a start of this model takes: learned, else guessed from its size, else a default."""
    return slot.typical_load or slot.last_load or slot.load_guess or DEFAULT_LOAD_ESTIMATE


def load_guessed(slot: Slot) -> bool:
    """No start of it was seen: its load time is a guess (from its size on disk, or a default)."""
    return slot.typical_load is None and slot.last_load is None


def start_error(slot: Slot, unit_result: str, detail: str) -> SparkError:
    """What every waiter of a failed start is told: the unit's result and its last words."""
    model = slot.id
    hint = f"journalctl -u {slot.info.unit}"
    if unit_result == "timeout":
        return ModelStartTimeoutError(
            f"The model '{model}' did not become ready within its start timeout.",
            retry_after=BACKOFF_BASE,
            hint=hint,
        )
    said = f": {detail}" if detail else ""
    return ModelStartFailedError(
        f"The model '{model}' failed to start ({unit_result or 'failed'}){said}; see `{hint}`.",
        retry_after=BACKOFF_BASE,
        hint=hint,
    )


def backoff_error(slot: Slot, now: float) -> ModelBackoffError:
    last = slot.last_error.message if slot.last_error else "it failed to start"
    return ModelBackoffError(
        f"The model '{slot.id}' failed {slot.failures} times in a row and is backing off: {last}",
        retry_after=max(1.0, slot.backoff_until - now),
        hint=f"journalctl -u {slot.info.unit}; `sparkctl start {slot.id}` retries now",
    )
