"""How long until a model is likely ready (its ETA), from what the scheduler knows now: what
stands before it, then its own load.

What stands before a model that is not running is the line of models queued ahead of it. Each
of them, in FIFO order, and then the model itself, starts once the models in its way are gone
(a drained model's requests end, then its stop), and no earlier than the start before it (one
swap at a time); it is ready a load time later. The times come from what was learned (load and
stop times kept across restarts, how long each model's requests last); before any history a
model's load time is guessed from its size on disk, and the estimate says it is a guess.

Pure arithmetic over the scheduler's slots: it is refreshed on every call, so a waiting client
sees it move as things happen.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparkctl.core.queue import WaitQueue
from sparkctl.core.slots import Slot, in_the_way, load_guessed, load_time
from sparkctl.core.states import ModelState

DEFAULT_STOP = 5.0  # seconds a stop takes, before one was seen
# A load time before any history, from the size on disk: an engine's fixed start (CUDA context,
# graph capture with a warm compile cache) and then its weights read at NVMe-and-unpack speed.
GUESS_BASE = 30.0
GUESS_SECONDS_PER_GIB = 4.0
DEFAULT_REQUEST = 10.0  # seconds a drained model's request still runs, before its requests were seen


@dataclass(frozen=True, slots=True)
class Eta:
    seconds: float
    guess: bool  # a load time on the way was not learned but guessed (or a default)


def estimate_ready(model: str, slots: dict[str, Slot], queue: WaitQueue, budget: float, now: float) -> Eta:
    """Seconds until `model` is likely ready if it is (or stays) wanted."""
    slot = slots[model]
    guess = load_guessed(slot)
    match slot.state:
        case ModelState.READY:
            return Eta(0.0, False)
        case ModelState.STARTING:
            return Eta(_starting_left(slot, now), guess)
        case ModelState.BACKOFF:
            return Eta(max(0.0, slot.backoff_until - now) + load_time(slot), guess)
        case _:
            return _through_the_line(slot, slots, queue, budget, now)


def guess_load(weights: int) -> float:
    """A load time guessed from the bytes of the weights on disk (no start seen yet)."""
    return GUESS_BASE + GUESS_SECONDS_PER_GIB * weights / 1024**3


def _through_the_line(
    target: Slot, slots: dict[str, Slot], queue: WaitQueue, budget: float, now: float
) -> Eta:
    # The models holding memory now, and when each could be gone if it had to make room.
    active = [s for s in slots.values() if s.holds_memory and s is not target]
    gone_at = {s.id: _gone_after(s, now) for s in active}
    line = [slots[m] for m in _down_in_line(slots, queue)]
    if target not in line:
        line.append(target)  # not queued (a Retry-After for a start not asked for yet): last
    lane, guess = 0.0, False
    for slot in line:
        guess |= load_guessed(slot)
        victims = in_the_way(slot, active, budget)
        start = max([lane] + [gone_at[v.id] for v in victims])
        if slot.holds_memory:  # being drained or stopped: it goes, then comes back
            start = max(start, _gone_after(slot, now))
        ready = start + load_time(slot)
        if slot is target:
            return Eta(max(1.0, ready), guess)
        active = [s for s in active if s not in victims] + [slot]
        gone_at[slot.id] = ready + (slot.request_time or DEFAULT_REQUEST) + (slot.stop_time or DEFAULT_STOP)
        lane = start
    raise AssertionError("the target is in the line")  # (appended above)


def _down_in_line(slots: dict[str, Slot], queue: WaitQueue) -> list[str]:
    """The models queued for a start, first come first, each once: those not running yet."""
    seen: list[str] = []
    for entry in queue:
        slot = slots[entry.model]
        if entry.model not in seen and slot.state not in (ModelState.STARTING, ModelState.READY):
            seen.append(entry.model)
    return seen


def _starting_left(slot: Slot, now: float) -> float:
    elapsed = now - slot.load_started if slot.load_started is not None else 0.0
    return max(1.0, load_time(slot) - elapsed)


def _gone_after(slot: Slot, now: float) -> float:
    """Seconds until `slot` could have stopped, were it told to make room now."""
    stop = slot.stop_time or DEFAULT_STOP
    match slot.state:
        case ModelState.STOPPING:
            began = slot.stop_started if slot.stop_started is not None else slot.since
            return max(0.0, stop - (now - began))
        case ModelState.STARTING:
            return _starting_left(slot, now) + (slot.request_time or DEFAULT_REQUEST) + stop
        case _:
            return _drain_left(slot, now) + stop


def _drain_left(slot: Slot, now: float) -> float:
    """Seconds until its in-flight requests are likely done (bounded by its drain deadline)."""
    if not slot.leases:
        return 0.0
    typical = slot.request_time or DEFAULT_REQUEST
    youngest = max(slot.lease_since.get(r, now) for r in slot.leases)
    # the last to end is likely the youngest; one past the typical length ends about now, not before
    left = max(1.0, typical - (now - youngest))
    if slot.drain_deadline is not None:
        left = min(left, max(0.0, slot.drain_deadline - now))
    return left
