"""What the scheduler learns and tells (core/estimate.py, the learned parts of core/scheduler.py):
the ETA of a model through the line before it, refreshed as things happen; a guess before any
history; admission by the learned footprint; a model that can never fit refused before anything
is evicted. Driven like test_scheduler.py: a recording fake and a clock moved by hand."""

from __future__ import annotations

import pytest

from sparkctl.core.estimate import DEFAULT_REQUEST, GUESS_BASE, GUESS_SECONDS_PER_GIB, guess_load
from sparkctl.core.states import ModelState
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
