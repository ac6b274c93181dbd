"""What the scheduler learns and tells (core/estimate.py, the learned parts of core/scheduler.py):
the ETA of a model through the line before it, refreshed as things happen; a guess before any
history; admission by the learned footprint; a model that can never fit refused before anything
is evicted. Driven like test_scheduler.py: a recording fake and a clock moved by hand."""

from __future__ import annotations

import pytest

from sparkctl.core.estimate import DEFAULT_REQUEST, GUESS_BASE, GUESS_SECONDS_PER_GIB, guess_load
from sparkctl.core.states import ActiveState, ModelState
from sparkctl.errors import ErrorCode, ModelTooLargeError
from tests.unit.test_scheduler import GIB, World, m


def test_a_cold_start_counts_down_its_learned_load_time() -> None:
    w = World(m("a"))
    w.s.learned_load("a", 40.0)
    assert w.s.eta("a", w.now).seconds == 40 and not w.s.eta("a", w.now).guess  # (not asked for yet)
    w.acquire(1, "a")
    w.advance(15)
    eta = w.s.eta("a", w.now)
    assert eta.seconds == 25 and not eta.guess
    w.advance(30)  # slower than ever: the estimate does not go below a second
    assert w.s.eta("a", w.now).seconds == 1
    w.ready("a")
    assert w.s.eta("a", w.now).seconds == 0


def test_before_any_history_the_load_time_is_guessed_from_the_size_on_disk() -> None:
    w = World(m("a"), total_memory=128 * GIB)
    w.s.weights("a", 60 * GIB)
    w.s.guessed_load("a", guess_load(60 * GIB))
    eta = w.s.eta("a", w.now)
    assert eta.guess and eta.seconds == GUESS_BASE + 60 * GUESS_SECONDS_PER_GIB
    assert w.s.load_guess("a") == eta.seconds
    w.acquire(1, "a")
    w.advance(50)
    w.ready("a")
    w.release(1, "a")
    assert w.s.load_guess("a") is None  # a start was seen: no more guessing
    assert w.s.view("a").last_load_seconds == 50


def test_a_swap_counts_the_drain_the_stop_and_the_load() -> None:
    w = World(m("a"), m("b"))
    for model, load in (("a", 20.0), ("b", 60.0)):
        w.s.learned_load(model, load)
    w.s.learned_stop("a", 8.0)
    w.acquire(1, "a")
    w.advance(20)
    w.ready("a")
    # a's requests have been seen to take 10 s
    for req in (2, 3):
        w.acquire(req, "a")
        w.advance(10)
        w.release(req, "a")
    w.release(1, "a")
    w.acquire(4, "a")  # in flight when b is asked for
    w.advance(4)
    w.acquire(5, "b")
    assert w.state("a") is ModelState.DRAINING and w.state("b") is ModelState.QUEUED
    eta = w.s.eta("b", w.now)
    # a's request has about 6 s left (of a typical ~10-30 s: the average of what was seen), then
    # its stop (8 s), then b's load (60 s)
    typical_request = w.s._slots["a"].request_time  # (the moving average it keeps)
    assert typical_request is not None
    assert eta.seconds == pytest.approx((typical_request - 4) + 8 + 60)
    w.release(4, "a")  # the drain ends early: the estimate follows
    assert w.state("a") is ModelState.STOPPING
    assert w.s.eta("b", w.now).seconds == pytest.approx(8 + 60)
    w.advance(3)
    assert w.s.eta("b", w.now).seconds == pytest.approx(5 + 60)
    w.stopped("a")
    assert w.s.view("a").last_stop_seconds == 3  # learned for the next swap
    assert w.state("b") is ModelState.STARTING and w.s.eta("b", w.now).seconds == 60


def test_a_request_behind_another_swap_waits_for_it_too() -> None:
    """FIFO: c waits for b's swap (a's stop, b's load), then b's requests and stop, then its load."""
    w = World(m("a"), m("b"), m("c"))
    for model, load in (("a", 10.0), ("b", 30.0), ("c", 50.0)):
        w.s.learned_load(model, load)
        w.s.learned_stop(model, 4.0)
    w.acquire(1, "a")
    w.ready("a")
    w.release(1, "a")
    w.acquire(2, "b")
    w.acquire(3, "c")
    b = w.s.eta("b", w.now).seconds
    c = w.s.eta("c", w.now)
    assert b == pytest.approx(4 + 30)  # a is idle: only its stop
    # b, once ready, serves its waiter (no request of b seen yet: a default), then stops
    assert c.seconds == pytest.approx(b + DEFAULT_REQUEST + 4 + 50) and not c.guess
    assert w.s.ahead_of("c") == 1


def test_a_model_that_fits_beside_the_running_one_waits_only_for_its_load() -> None:
    w = World(m("a", 0.3), m("b", 0.3))
    w.s.learned_load("b", 12.0)
    w.acquire(1, "a")
    w.ready("a")
    assert w.s.eta("b", w.now).seconds == 12


def test_backoff_counts_its_remaining_delay() -> None:
    w = World(m("a"))
    w.s.learned_load("a", 10.0)
    for req in (1, 2):
        w.acquire(req, "a")
        w.fail("a")
    assert w.state("a") is ModelState.BACKOFF
    w.advance(5)
    assert w.s.eta("a", w.now).seconds == pytest.approx(25 + 10)


def test_a_learned_footprint_above_the_declared_share_is_what_co_residence_counts() -> None:
    total = 100 * GIB
    w = World(m("a", 0.3), m("b", 0.5), total_memory=total)
    w.s.learned_memory("a", 45 * GIB)  # declared 0.3, takes 0.45: a warning, and its true share
    assert any("well above its declared" in x for x in w.fake.warnings)
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")  # 0.45 + 0.5 > 0.94: a swap, where the declaration said they fit
    assert w.state("a") is ModelState.DRAINING and w.fake.starts() == ["a"]
    w.release(1, "a")
    w.stopped("a")
    assert w.fake.watching == {"b": int(0.5 * total)}  # the memory gate counts b's own share


def test_a_learned_footprint_below_the_declared_share_does_not_shrink_it() -> None:
    w = World(m("a", 0.5), m("b", 0.5), total_memory=100 * GIB)
    w.s.learned_memory("a", 10 * GIB)  # read just after ready: a lower bound, not what it takes
    assert w.fake.warnings == []
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")
    assert w.state("a") is ModelState.DRAINING  # 0.5 + 0.5 still does not fit 0.94


def test_a_model_whose_weights_exceed_the_budget_is_refused_before_anything_is_evicted() -> None:
    w = World(m("small", 0.5), m("huge", 0.9), total_memory=100 * GIB)
    w.s.weights("huge", 120 * GIB)
    w.acquire(1, "small")
    w.ready("small")
    with pytest.raises(ModelTooLargeError) as refused:
        w.acquire(2, "huge")
    error = refused.value
    assert error.code is ErrorCode.MODEL_TOO_LARGE and error.code.status == 400  # not retried
    assert "120.0 GiB on disk" in error.message and "94.0 GiB" in error.message
    assert w.state("small") is ModelState.READY and w.fake.stops() == []  # nothing evicted
    assert w.fake.starts() == ["small"] and w.s.queue_length == 0
    with pytest.raises(ModelTooLargeError):
        w.s.admin_start("huge", w.now)
    assert w.fake.stops() == []


def test_a_model_seen_to_take_more_than_the_host_has_is_refused() -> None:
    w = World(m("a", 0.5), total_memory=100 * GIB)
    w.s.learned_memory("a", 130 * GIB)  # (learned where more memory was: an upgrade, a move)
    with pytest.raises(ModelTooLargeError, match=r"seen to take 130\.0 GiB"):
        w.acquire(1, "a")


def test_a_preload_that_can_never_fit_is_skipped_with_a_warning() -> None:
    w = World(m("big", 0.5, preload=True), m("ok", 0.3, preload=True), total_memory=100 * GIB)
    w.s.weights("big", 99 * GIB)
    w.s.preload(w.now)
    assert w.fake.starts() == ["ok"]
    assert any("not preloaded" in x and "big" in x for x in w.fake.warnings)


def test_without_a_known_total_nothing_is_refused_by_size() -> None:
    w = World(m("a"))  # total_memory unknown (0)
    w.s.weights("a", 10**15)
    w.acquire(1, "a")
    assert w.fake.starts() == ["a"]


def _loads(w: World, **loads: float) -> None:
    for model, seconds in loads.items():
        w.s.learned_load(model, seconds)
        w.s.learned_stop(model, 4.0)


def test_the_swap_target_is_estimated_before_a_re_requested_draining_model() -> None:
    """x drains (an operator's stop) and is asked for again; then y comes and becomes the swap
    target: y starts first (x's stop makes its room), x only after y has served and stopped."""
    w = World(m("x"), m("y"))
    _loads(w, x=50.0, y=60.0)
    w.acquire(1, "x")
    w.ready("x")
    w.s.admin_stop("x", w.now)  # drains: request 1 is in flight
    w.acquire(2, "x")
    w.acquire(3, "y")
    assert w.state("x") is ModelState.DRAINING and w.state("y") is ModelState.QUEUED
    etas = w.s.etas(w.now)
    y = w.s.eta("y", w.now).seconds
    assert etas["y"].seconds == y == pytest.approx(DEFAULT_REQUEST + 4 + 60)
    assert etas["x"].seconds == pytest.approx(y + DEFAULT_REQUEST + 4 + 50)  # after y, not before
    assert w.s.eta("x", w.now).seconds == etas["x"].seconds


def test_a_model_that_fits_beside_a_draining_one_is_not_held_behind_it() -> None:
    w = World(m("x", 0.3), m("y", 0.3))
    _loads(w, x=50.0, y=20.0)
    w.acquire(1, "x")
    w.ready("x")
    w.s.admin_stop("x", w.now)
    w.acquire(2, "x")  # x will stop, then start again; y fits beside it meanwhile
    assert w.s.eta("y", w.now).seconds == 20  # (a Retry-After, y not asked for yet)
    w.acquire(3, "y")
    assert w.state("y") is ModelState.STARTING and w.s.etas(w.now)["y"].seconds == 20


def test_a_re_requested_draining_model_counts_its_own_drain_and_stop() -> None:
    w = World(m("x"))
    _loads(w, x=50.0)
    w.acquire(1, "x")
    w.ready("x")
    w.s.admin_stop("x", w.now)
    w.acquire(2, "x")
    assert w.s.eta("x", w.now).seconds == pytest.approx(DEFAULT_REQUEST + 4 + 50)


def test_a_drain_is_bounded_by_drain_timeout_in_the_estimate() -> None:
    w = World(m("a"), m("b"), drain_timeout=20)
    _loads(w, a=10.0, b=30.0)
    w.acquire(1, "a")
    w.ready("a")
    w.advance(3600)  # a request an hour long teaches a long request time
    w.release(1, "a")
    w.acquire(2, "a")
    w.acquire(3, "b")
    assert w.s.eta("b", w.now).seconds == pytest.approx(20 + 4 + 30)  # drain_timeout, not an hour


def test_one_walk_gives_every_waiting_model_the_estimate_it_gets_alone() -> None:
    w = World(m("a"), m("b"), m("c"), m("d", 0.2))
    _loads(w, a=10.0, b=30.0, c=50.0, d=5.0)
    w.acquire(1, "a")
    w.ready("a")
    for req, model in ((2, "b"), (3, "c"), (4, "b"), (5, "d")):
        w.acquire(req, model)
    etas = w.s.etas(w.now)
    assert w.state("a") is ModelState.DRAINING  # making room for b: not on its way anywhere
    assert set(etas) == {"b", "c", "d"}
    for model in "bcd":
        assert etas[model] == w.s.eta(model, w.now), model
    assert etas["b"].seconds < etas["c"].seconds


def test_only_a_stop_sparkctl_asked_for_is_timed() -> None:
    w = World(m("a"))
    w.acquire(1, "a")
    w.ready("a")
    w.release(1, "a")
    w.s.admin_stop("a", w.now)
    w.advance(3)
    w.stopped("a")
    assert w.s.view("a").last_stop_seconds == 3
    w.acquire(2, "a")
    w.ready("a")
    w.s.unit_state("a", ActiveState.DEACTIVATING, w.now)  # `systemctl stop` by hand
    w.advance(40)
    w.s.unit_state("a", ActiveState.INACTIVE, w.now)
    assert w.state("a") is ModelState.STOPPED and w.s.view("a").last_stop_seconds is None


def test_the_memory_gate_s_wait_is_learned_and_counted() -> None:
    """On a Spark, memory comes back some moments after a stop: a swap's estimate counts how long
    the gate has held starts, and an open gate what it likely holds still."""
    w = World(m("a"), m("b"), total_memory=100 * GIB)
    _loads(w, a=20.0, b=30.0)
    w.acquire(1, "a")
    w.ready("a")
    w.release(1, "a")
    w.acquire(2, "b")
    w.stopped("a")
    assert "b" in w.fake.watching  # the gate is open
    assert w.s.eta("b", w.now).seconds == 30  # nothing learned of the gate yet
    w.advance(6)
    w.s.memory("b", 100 * GIB, w.now)  # memory back after 6 s
    assert w.state("b") is ModelState.STARTING
    w.ready("b")
    w.release(2, "b")
    w.acquire(3, "a")  # b is idle: its stop (4 s), then the gate (6 s), then a's load
    assert w.s.eta("a", w.now).seconds == pytest.approx(4 + 6 + 20)
    w.stopped("b")
    w.advance(2)  # the gate has held a for 2 s of its likely 6
    assert w.s.eta("a", w.now).seconds == pytest.approx(4 + 20)
