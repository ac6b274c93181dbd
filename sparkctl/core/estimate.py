"""How long until a model is likely ready (its ETA), from what the scheduler knows now: what
stands before it, then its own load.

What stands before a model that is not running is the line of models waiting for a start, as the
scheduler will take them: the swap in progress first, then the queue's models in FIFO order. Each
starts once the models in its way are gone (a drained model's requests end, bounded by
drain_timeout, then its stop, then the memory gate sees their memory back) and no earlier than
the start before it (one swap at a time); it is ready a load time later. One walk of the line
gives every model in it its estimate. The times come from what was learned (load and stop times
kept across restarts, how long each model's requests last, how long the gate holds a start);
before any history a model's load time is guessed from its size on disk, and the estimate says
it is a guess.

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


@dataclass(frozen=True, slots=True)
class Line:
    """What the estimate reads of the scheduler: its slots, its queue, the swap target (which
    the scheduler takes before the queue's order), its budget and drain_timeout."""

    slots: dict[str, Slot]
    queue: WaitQueue
    target: str | None
    budget: float
    drain_timeout: float
    gate_time: float = 0.0  # how long the memory gate holds a start after a swap's stops
    gate_left: float | None = None  # the target's gate, open now: how long it likely holds still


def guess_load(weights: int) -> float:
    """A load time guessed from the bytes of the weights on disk (no start seen yet)."""
    return GUESS_BASE + GUESS_SECONDS_PER_GIB * weights / 1024**3


def estimate_all(line: Line, now: float) -> dict[str, Eta]:
    """The estimate of every model that is ready, starting, backing off or waiting in line."""
    out: dict[str, Eta] = {}
    for slot in line.slots.values():
        if (own := _own(slot, now)) is not None:
            out[slot.id] = own
    out.update(_walk(line, _waiting(line), now))
    return out


def estimate_ready(model: str, line: Line, now: float) -> Eta:
    """Seconds until `model` is likely ready if it is (or stays, or became) wanted."""
    slot = line.slots[model]
    if (own := _own(slot, now)) is not None:
        return own
    waiting = _waiting(line)
    if slot not in waiting:
        waiting.append(slot)  # not wanted yet (a Retry-After for a start not asked for): last
    return _walk(line, waiting[: waiting.index(slot) + 1], now)[model]


def _own(slot: Slot, now: float) -> Eta | None:
    """The estimate that needs no line: ready, starting, or backing off (then loading)."""
    guess = load_guessed(slot)
    match slot.state:
        case ModelState.READY:
            return Eta(0.0, False)
        case ModelState.STARTING:
            return Eta(_starting_left(slot, now), guess)
        case ModelState.BACKOFF:
            return Eta(max(0.0, slot.backoff_until - now) + load_time(slot), guess)
        case _:
            return None


def _waiting(line: Line) -> list[Slot]:
    """The models waiting for a start, in the order the scheduler takes them: the swap target,
    then the queue's, first come first, each once."""
    order = [line.target] if line.target is not None else []
    for entry in line.queue:
        if entry.model not in order:
            order.append(entry.model)
    return [line.slots[m] for m in order if _own(line.slots[m], 0.0) is None]


def _walk(line: Line, waiting: list[Slot], now: float) -> dict[str, Eta]:
    # What holds memory now (keyed: a model is there once), and when each could be gone if it had
    # to make room. A waiting model that still holds memory (draining, stopping) stays there until
    # the walk reaches it: the models before it may need its room.
    active = {s.id: s for s in line.slots.values() if s.holds_memory}
    gone_at = {s.id: _gone_after(s, now, line.drain_timeout) for s in active.values()}
    out: dict[str, Eta] = {}
    # The scheduler starts every waiting model that fits at once; the first that does not is the
    # swap, and nothing behind it starts before it has: `lane` is when the last swap starts.
    lane, guess = 0.0, False
    for slot in waiting:
        guess |= load_guessed(slot)
        own = 0.0
        if slot.id in active:  # being drained or stopped: it goes first, then comes back
            own = gone_at.pop(slot.id)
            del active[slot.id]
        victims = in_the_way(slot, list(active.values()), line.budget)
        start = max([own, lane] + [gone_at[v.id] for v in victims])
        if victims:  # its stops free memory, which the gate waits to see come back
            start += line.gate_time
            lane = start
        elif slot.id == line.target and line.gate_left is not None:
            start += line.gate_left
            lane = start
        ready = start + load_time(slot)
        out[slot.id] = Eta(max(1.0, ready), guess)
        for v in victims:
            del active[v.id]
        active[slot.id] = slot
        request = min(slot.request_time or DEFAULT_REQUEST, line.drain_timeout)
        gone_at[slot.id] = ready + request + (slot.stop_time or DEFAULT_STOP)
    return out


def _starting_left(slot: Slot, now: float) -> float:
    elapsed = now - slot.load_started if slot.load_started is not None else 0.0
    return max(1.0, load_time(slot) - elapsed)


def _gone_after(slot: Slot, now: float, drain_timeout: float) -> float:
    """Seconds until `slot` could have stopped, were it told to make room now."""
    stop = slot.stop_time or DEFAULT_STOP
    match slot.state:
        case ModelState.STOPPING:
            began = slot.stop_started if slot.stop_started is not None else slot.since
            return max(0.0, stop - (now - began))
        case ModelState.STARTING:
            request = min(slot.request_time or DEFAULT_REQUEST, drain_timeout)
            return _starting_left(slot, now) + request + stop
        case _:
            return _drain_left(slot, now, drain_timeout) + stop


def _drain_left(slot: Slot, now: float, drain_timeout: float) -> float:
    """Seconds until its in-flight requests are likely done: bounded by its drain deadline, or,
    not draining yet, by the drain_timeout a drain would get."""
    if not slot.leases:
        return 0.0
    typical = slot.request_time or DEFAULT_REQUEST
    youngest = max(slot.lease_since.get(r, now) for r in slot.leases)
    # the last to end is likely the youngest; one past the typical length ends about now, not before
    left = max(1.0, typical - (now - youngest))
    bound = slot.drain_deadline - now if slot.drain_deadline is not None else drain_timeout
    return min(left, max(0.0, bound))
