"""The scheduler, event by event: a recording fake of its effects and a clock moved by hand.

Every step also checks the one-tenant invariant on the fake's view of systemd: models it was told
to start and not yet told have stopped never exceed the budget, and an exclusive one runs alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from sparkctl.core.scheduler import GRANTED, QUEUED, Scheduler
from sparkctl.core.states import ActiveState, JobResult, ModelInfo, ModelState, TimerKey
from sparkctl.errors import (
    ModelBackoffError,
    ModelLoadingError,
    ModelStartFailedError,
    ModelStartTimeoutError,
    QueueFullError,
    SparkError,
    UpstreamError,
)
from sparkctl.units.names import service_name

GIB = 1024**3


@dataclass
class Fake:
    """Records every effect; `running` is what systemd would have active or activating."""

    infos: dict[str, ModelInfo]
    budget: float
    calls: list[tuple[str, ...]] = field(default_factory=list)
    granted: list[int] = field(default_factory=list)
    rejected: dict[int, SparkError] = field(default_factory=dict)
    aborted: dict[int, SparkError] = field(default_factory=dict)
    timers: dict[TimerKey, float] = field(default_factory=dict)
    watching: dict[str, int] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    states: list[tuple[str, ModelState]] = field(default_factory=list)
    settled: list[tuple[str, str, SparkError | None]] = field(default_factory=list)  # reservations
    learned: dict[str, float] = field(default_factory=dict)  # shares learned above the declared

    def share(self, model: str) -> float:
        return max(self.infos[model].fraction, self.learned.get(model, 0.0))

    def start_unit(self, model: str) -> None:
        self.calls.append(("start", model))
        self.running.add(model)
        self.check()

    def stop_unit(self, model: str) -> None:
        self.calls.append(("stop", model))

    def grant(self, request: int) -> None:
        self.granted.append(request)

    def reject(self, request: int, error: SparkError) -> None:
        self.rejected[request] = error

    def abort_leases(self, model: str, leases: list[int], error: SparkError) -> None:
        for lease in leases:
            self.aborted[lease] = error

    def set_timer(self, key: TimerKey, at: float) -> None:
        self.timers[key] = at

    def cancel_timer(self, key: TimerKey) -> None:
        self.timers.pop(key, None)

    def watch_memory(self, model: str, need_bytes: int) -> None:
        self.watching[model] = need_bytes

    def unwatch_memory(self, model: str) -> None:
        self.watching.pop(model, None)

    def state_changed(self, model: str, state: ModelState) -> None:
        self.states.append((model, state))

    def warn(self, message: str, model: str) -> None:
        self.warnings.append(f"{model}: {message}")

    def reservation_settled(self, model: str, holder: str, error: SparkError | None) -> None:
        self.settled.append((model, holder, error))

    def check(self) -> None:
        infos = [self.infos[m] for m in self.running]
        total = sum(self.share(m) for m in self.running)
        assert total <= self.budget + 1e-9, f"over budget: {sorted(self.running)}"
        if any(i.exclusive for i in infos):
            assert len(infos) == 1, f"exclusive model not alone: {sorted(self.running)}"

    def starts(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "start"]

    def stops(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "stop"]


class World:
    def __init__(
        self,
        *models: ModelInfo,
        budget: float = 0.94,
        total_memory: int = 0,
        fake: type[Fake] = Fake,
        **kw: float,
    ) -> None:
        self.now = 1000.0
        self.fake = fake({m.id: m for m in models}, budget)
        self.s = Scheduler(list(models), self.fake, memory_budget=budget, total_memory=total_memory, **kw)  # type: ignore[arg-type]

    def acquire(self, req: int, model: str, *, wait: bool = True) -> object:
        return self.s.acquire(req, model, self.now, wait=wait)

    def release(self, req: int, model: str) -> None:
        self.s.release(req, model, self.now)

    def ready(self, model: str) -> None:
        self.s.start_finished(model, JobResult.DONE, "success", self.now)

    def fail(self, model: str, unit_result: str = "exit-code") -> None:
        self.fake.running.discard(model)
        self.s.start_finished(model, JobResult.FAILED, unit_result, self.now)

    def stopped(self, model: str) -> None:
        self.fake.running.discard(model)
        self.s.stop_finished(model, self.now)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing due timers in order."""
        end = self.now + seconds
        while True:
            due = sorted((at, key) for key, at in self.fake.timers.items() if at <= end)
            if not due:
                break
            at, key = due[0]
            del self.fake.timers[key]
            self.now = max(self.now, at)
            self.s.timer(key, self.now)
        self.now = end

    def state(self, model: str) -> ModelState:
        return self.s.state(model)


def m(name: str, fraction: float = 0.7, **kw: object) -> ModelInfo:
    return ModelInfo(id=name, fraction=fraction, unit=service_name(name), **kw)  # type: ignore[arg-type]


def test_ready_model_is_served_at_once_and_idles_from_the_end_of_the_last_response() -> None:
    w = World(m("a", idle_timeout=60))
    assert w.acquire(1, "a") is QUEUED and w.fake.starts() == ["a"]
    assert w.state("a") is ModelState.STARTING
    w.ready("a")
    assert w.fake.granted == [1] and w.state("a") is ModelState.READY
    assert w.acquire(2, "a") is GRANTED
    assert ("idle", "a") not in w.fake.timers  # leases held: no idle deadline
    w.advance(500)  # a long stream: nothing stops it
    w.release(1, "a")
    assert ("idle", "a") not in w.fake.timers
    w.release(2, "a")
    assert w.fake.timers[("idle", "a")] == w.now + 60
    w.advance(30)
    assert w.acquire(3, "a") is GRANTED  # a new lease cancels the deadline
    assert ("idle", "a") not in w.fake.timers
    w.release(3, "a")
    w.advance(59)
    assert w.fake.stops() == []
    w.advance(1)
    assert w.fake.stops() == ["a"] and w.state("a") is ModelState.STOPPING
    w.stopped("a")
    assert w.state("a") is ModelState.STOPPED


def test_requests_for_a_starting_model_join_its_start() -> None:
    w = World(m("a"))
    for req in range(5):
        assert w.acquire(req, "a") is QUEUED
    assert w.fake.starts() == ["a"]  # one start, not five
    assert w.s.view("a").waiting == 5
    w.ready("a")
    assert w.fake.granted == [0, 1, 2, 3, 4] and w.s.view("a").leases == 5


def test_a_swap_drains_the_running_model_first_and_new_requests_queue_behind() -> None:
    w = World(m("a"), m("b"), drain_timeout=600)
    w.acquire(1, "a")
    w.ready("a")
    assert w.acquire(2, "b") is QUEUED
    assert w.state("a") is ModelState.DRAINING and w.state("b") is ModelState.QUEUED
    # new requests for the running model wait behind b (FIFO): b cannot starve
    assert w.acquire(3, "a") is QUEUED
    assert (w.s.ahead_of("b"), w.s.ahead_of("a")) == (0, 1)  # what a waiting stream is told
    assert w.fake.stops() == []  # a still serves request 1
    w.advance(100)
    w.release(1, "a")
    assert w.fake.stops() == ["a"]
    assert w.fake.starts() == ["a"]  # b starts only once a is stopped
    w.stopped("a")
    assert w.fake.starts() == ["a", "b"]
    w.ready("b")
    assert w.fake.granted == [1, 2]
    # a's waiter is next: b is drained in turn (it holds lease 2)
    assert w.state("b") is ModelState.DRAINING and w.state("a") is ModelState.QUEUED
    w.release(2, "b")
    w.stopped("b")
    w.ready("a")
    assert w.fake.granted == [1, 2, 3]


def test_no_starvation_under_continuous_traffic_for_the_running_model() -> None:
    w = World(m("a"), m("b"))
    w.acquire(0, "a")
    w.ready("a")
    w.acquire(100, "b")
    req = 1
    for _ in range(50):  # a's clients keep coming; each finishes quickly
        assert w.acquire(req, "a") is QUEUED
        req += 1
    w.release(0, "a")
    w.stopped("a")
    w.ready("b")
    assert w.fake.granted[:2] == [0, 100]


def test_drain_timeout_stops_the_model_and_ends_its_requests_with_an_error() -> None:
    w = World(m("a"), m("b"), drain_timeout=600)
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")
    w.advance(599)
    assert w.fake.stops() == []
    w.advance(1)
    assert w.fake.stops() == ["a"]
    assert isinstance(w.fake.aborted[1], UpstreamError)
    assert any("drain_timeout" in x for x in w.fake.warnings)
    w.release(1, "a")  # the gateway releases the aborted lease: harmless
    w.stopped("a")
    w.ready("b")
    assert w.fake.granted == [1, 2]


def test_shared_models_co_reside_within_the_budget_and_a_third_evicts_the_idle_one() -> None:
    w = World(m("small", 0.3), m("mid", 0.5), m("big", 0.6))
    w.acquire(1, "small")
    w.acquire(2, "mid")
    assert w.fake.starts() == ["small", "mid"]  # 0.8 fits 0.94: both start at once
    w.ready("small")
    w.ready("mid")
    w.release(1, "small")
    w.acquire(3, "big")  # 0.6 fits only without mid (0.5) or ... small is idle, mid busy
    # the idle one goes first, then the larger: small alone is not enough (0.5 + 0.6 > 0.94)
    assert w.state("small") is ModelState.STOPPING and w.state("mid") is ModelState.DRAINING
    w.stopped("small")
    w.release(2, "mid")
    w.stopped("mid")
    assert w.fake.starts()[-1] == "big"


def test_an_exclusive_model_runs_alone_and_evicts_a_pinned_one_which_comes_back_after() -> None:
    w = World(m("utility", 0.05, pinned=True, preload=True), m("main", 0.8), m("solo", 0.5, exclusive=True))
    w.s.adopt({}, w.now)
    w.s.preload(w.now)
    w.ready("utility")
    w.acquire(1, "main")
    assert w.fake.starts() == ["utility", "main"]  # pinned and main co-reside (0.85)
    w.ready("main")
    w.release(1, "main")
    assert w.state("utility") is ModelState.READY and ("idle", "utility") not in w.fake.timers
    w.acquire(2, "solo")
    assert sorted(w.fake.stops()) == ["main", "utility"]  # pinned is evicted only because it cannot fit
    w.stopped("main")
    w.stopped("utility")
    w.ready("solo")
    w.release(2, "solo")
    w.advance(1200)  # solo idles out
    w.stopped("solo")
    assert w.fake.starts()[-1] == "utility" and w.state("utility") is ModelState.STARTING


def test_pinned_model_is_never_evicted_while_it_fits() -> None:
    w = World(m("utility", 0.05, pinned=True), m("a", 0.8), m("b", 0.85))
    w.s.admin_start("utility", w.now)
    w.ready("utility")
    for n, model in enumerate(["a", "b", "a", "b"]):
        w.acquire(n, model)
        if w.state(model) is not ModelState.STARTING:
            other = "b" if model == "a" else "a"
            w.release(n - 1, other)
            w.stopped(other)
        w.ready(model)
    assert "utility" not in w.fake.stops()


def test_a_failed_start_fails_every_waiter_then_backs_off() -> None:
    w = World(m("a"))
    for req in range(3):
        w.acquire(req, "a")
    w.fail("a")
    assert set(w.fake.rejected) == {0, 1, 2}
    err = w.fake.rejected[0]
    assert isinstance(err, ModelStartFailedError) and "journalctl -u sparkctl-a.service" in err.message
    assert w.state("a") is ModelState.FAILED  # one failure: the next request tries again
    assert w.acquire(3, "a") is QUEUED and w.fake.starts() == ["a", "a"]
    w.fail("a", "timeout")
    assert isinstance(w.fake.rejected[3], ModelStartTimeoutError)
    assert w.state("a") is ModelState.BACKOFF  # twice in a row: back off instead of a restart loop
    with pytest.raises(ModelBackoffError) as exc:
        w.acquire(4, "a")
    assert exc.value.retry_after == 30 and w.fake.starts() == ["a", "a"]
    w.advance(30)
    assert w.state("a") is ModelState.FAILED
    w.acquire(5, "a")
    w.fail("a")
    with pytest.raises(ModelBackoffError) as exc:
        w.acquire(6, "a")
    assert exc.value.retry_after == 60  # doubling
    # the view says why, for the dashboard (#17): what its waiters were told, until it is ready
    assert w.s.view("a").last_error == w.fake.rejected[5].message
    w.s.admin_start("a", w.now)  # an operator overrides the back-off
    assert w.fake.starts()[-1] == "a" and w.state("a") is ModelState.STARTING
    w.ready("a")
    assert w.s.view("a").failures == 0 and w.s.view("a").last_error is None


def test_a_start_lost_with_the_bus_fails_its_waiters_at_once_without_blame() -> None:
    w = World(m("a"))
    w.acquire(1, "a")
    w.acquire(2, "a")
    w.s.job_lost("a", "lost the connection to systemd (EOFError)", w.now)
    assert set(w.fake.rejected) == {1, 2}
    err = w.fake.rejected[1]
    assert isinstance(err, ModelStartFailedError) and "lost the connection to systemd" in err.message
    assert err.retry_after == 5
    assert w.state("a") is ModelState.STOPPED and w.s.view("a").failures == 0  # not the model's fault
    # systemd, asked again once connected, says it did start: followed like any change
    w.s.resync({"a": ActiveState.ACTIVE}, w.now)
    assert w.state("a") is ModelState.READY and w.acquire(3, "a") is GRANTED


def test_a_stop_lost_with_the_bus_holds_its_memory_until_systemd_says() -> None:
    w = World(m("big", exclusive=True), m("other"))
    w.acquire(1, "big")
    w.ready("big")
    w.release(1, "big")
    w.acquire(2, "other")  # a swap: big drains (nothing in flight) and is stopped
    assert w.fake.stops() == ["big"] and w.state("big") is ModelState.STOPPING
    w.s.job_lost("big", "lost the connection to systemd", w.now)
    assert w.state("big") is ModelState.STOPPING and w.fake.starts() == ["big"]  # no start on a guess
    w.s.resync({"big": ActiveState.ACTIVE, "other": ActiveState.INACTIVE}, w.now)
    assert w.fake.stops() == ["big", "big"]  # the stop never happened: asked again
    w.stopped("big")
    assert w.fake.starts() == ["big", "other"]
    w.ready("other")
    assert w.fake.granted == [1, 2]


def test_after_a_reconnection_what_stopped_meanwhile_is_stopped() -> None:
    w = World(m("a"), m("b", fraction=0.2))
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")
    w.s.job_lost("b", "lost the connection to systemd", w.now)
    w.fake.running.discard("a")
    w.s.resync({"a": ActiveState.INACTIVE, "b": ActiveState.ACTIVATING}, w.now)
    assert isinstance(w.fake.aborted[1], UpstreamError)  # a went away while serving
    assert w.state("a") is ModelState.STOPPED and w.state("b") is ModelState.STARTING
    w.s.unit_state("b", ActiveState.ACTIVE, w.now)
    assert w.state("b") is ModelState.READY


def test_a_start_that_waited_for_the_connection_survives_the_resync() -> None:
    """A start asked for while the bus was down was never sent (the effects held it): at the
    reconnection its waiters are still queued and the scheduler decides afresh from systemd's
    view — here, that a model whose lost start did happen now stands in the way."""
    models = [m("a", 0.6), m("b", 0.6)]
    w = World(*models)
    bus = w.fake = FlakyBus(w.fake.infos, w.fake.budget)
    w.s = Scheduler(models, bus, memory_budget=bus.budget)
    w.acquire(1, "b")  # b's start is sent …
    bus.down = True
    w.s.job_lost("b", "lost the connection to systemd (EOFError)", w.now)  # … and its answer lost
    assert 1 in w.fake.rejected and w.state("b") is ModelState.STOPPED
    w.acquire(2, "a")  # a fits beside a stopped b: its start is asked for, and held
    assert w.state("a") is ModelState.STARTING and bus.held == ["a"]
    bus.down, bus.held = False, []
    w.s.resync({"a": ActiveState.INACTIVE, "b": ActiveState.ACTIVE}, w.now)  # b did start
    assert 2 not in w.fake.rejected and w.state("b") is ModelState.STOPPING  # idle b makes room …
    assert w.state("a") is ModelState.QUEUED  # … rather than a started beside it
    w.fake.check()
    w.stopped("b")
    assert w.state("a") is ModelState.STARTING  # … and a is started for its waiter
    w.ready("a")
    assert w.fake.granted == [2]


def test_end_all_ends_every_lease_and_waiter_with_the_error() -> None:
    w = World(m("a"), m("b", exclusive=True))
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")  # waits for a swap
    stopping = UpstreamError("sparkctl is stopping")
    w.s.end_all(stopping)
    assert w.fake.aborted == {1: stopping} and w.fake.rejected == {2: stopping}
    assert w.s.view("a").leases == 0 and w.s.queue_length == 0


def test_a_model_that_dies_while_serving_ends_its_leases_at_once() -> None:
    w = World(m("a"))
    w.acquire(1, "a")
    w.acquire(2, "a")
    w.ready("a")
    w.fake.running.discard("a")
    w.s.unit_state("a", ActiveState.FAILED, w.now)
    assert set(w.fake.aborted) == {1, 2} and isinstance(w.fake.aborted[1], UpstreamError)
    assert w.state("a") is ModelState.FAILED
    assert w.acquire(3, "a") is QUEUED and w.fake.starts() == ["a", "a"]


def test_a_hung_engine_ends_its_leases_is_stopped_and_started_again_for_its_waiters() -> None:
    w = World(m("a", max_concurrent=1))
    w.acquire(1, "a")
    w.ready("a")
    assert w.acquire(2, "a") is QUEUED  # behind the one in flight
    w.s.engine_hung("a", "its health check went unanswered 3 times in 30s", w.now)
    assert set(w.fake.aborted) == {1} and "stopped answering" in w.fake.aborted[1].message
    assert w.state("a") is ModelState.STOPPING and w.fake.stops() == ["a"]
    assert any("stopped answering" in warning for warning in w.fake.warnings)
    w.release(1, "a")
    w.stopped("a")
    assert w.fake.starts() == ["a", "a"] and w.state("a") is ModelState.STARTING  # for request 2
    w.s.engine_hung("a", "a late report", w.now)  # about the old engine: the new one is spared
    assert w.state("a") is ModelState.STARTING and w.fake.stops() == ["a"]
    w.ready("a")
    assert 2 in w.fake.granted


def test_systemd_is_the_source_of_truth_for_changes_made_by_hand() -> None:
    w = World(m("a", exclusive=True), m("b", exclusive=True))
    w.fake.running.add("a")
    w.s.unit_state("a", ActiveState.ACTIVATING, w.now)
    assert w.state("a") is ModelState.STARTING
    w.s.unit_state("a", ActiveState.ACTIVE, w.now)
    assert w.state("a") is ModelState.READY and ("idle", "a") in w.fake.timers  # adopted, idles out
    # `systemctl start b` by hand: Conflicts= stops a first
    w.s.unit_state("a", ActiveState.DEACTIVATING, w.now)
    w.s.unit_state("a", ActiveState.INACTIVE, w.now)
    w.fake.running.discard("a")
    w.s.unit_state("b", ActiveState.ACTIVE, w.now)
    assert w.state("a") is ModelState.STOPPED and w.state("b") is ModelState.READY
    assert w.fake.starts() == [] and w.fake.stops() == []  # the scheduler did none of it


def test_adopting_running_units_restarts_nothing_and_arms_idle_timers() -> None:
    w = World(m("a", idle_timeout=60), m("p", 0.05, pinned=True, preload=True), m("q", 0.1, preload=True))
    w.fake.running |= {"a", "p"}
    w.s.adopt({"a": ActiveState.ACTIVE, "p": ActiveState.ACTIVE, "q": ActiveState.INACTIVE}, w.now)
    assert w.fake.starts() == [] and w.fake.stops() == []
    assert w.state("a") is ModelState.READY and w.fake.timers[("idle", "a")] == w.now + 60
    assert ("idle", "p") not in w.fake.timers  # pinned
    assert w.acquire(1, "a") is GRANTED
    w.s.preload(w.now)  # at boot only
    assert w.fake.starts() == ["q"]


def test_stop_is_the_idle_path_with_zero_timeout_and_now_does_not_wait() -> None:
    w = World(m("a"), m("b"))
    w.acquire(1, "a")
    w.ready("a")
    w.s.admin_stop("a", w.now)
    assert w.fake.stops() == [] and w.state("a") is ModelState.DRAINING  # waits for request 1
    w.release(1, "a")
    assert w.fake.stops() == ["a"]
    w.stopped("a")
    w.acquire(2, "b")
    w.ready("b")
    w.s.admin_stop("b", w.now, force=True)
    assert w.fake.stops() == ["a", "b"] and isinstance(w.fake.aborted[2], UpstreamError)


def test_idle_timeout_zero_stops_as_soon_as_idle_and_never_stops_never() -> None:
    w = World(m("zero", 0.3, idle_timeout=0), m("never", 0.3, idle_timeout=math.inf))
    w.acquire(1, "zero")
    w.acquire(2, "never")
    w.ready("zero")
    w.ready("never")
    w.release(1, "zero")
    w.release(2, "never")
    assert w.fake.stops() == ["zero"]
    w.advance(10**7)
    assert w.fake.stops() == ["zero"]


def test_memory_gate_waits_for_the_memory_a_stopped_model_held() -> None:
    w = World(m("a", 0.8), m("b", 0.5), total_memory=100 * GIB, memory_wait=60)
    w.acquire(1, "a")
    w.ready("a")
    w.release(1, "a")
    w.acquire(2, "b")
    w.stopped("a")
    assert w.fake.watching == {"b": 50 * GIB} and w.fake.starts() == ["a"]
    w.s.memory("b", 20 * GIB, w.now)  # still held by the dying engine
    w.advance(5)
    w.s.memory("b", 49 * GIB, w.now)
    assert w.fake.starts() == ["a"]
    w.s.memory("b", 55 * GIB, w.now)  # released
    assert w.fake.starts() == ["a", "b"] and w.fake.watching == {} and ("memory", "b") not in w.fake.timers


def test_memory_gate_gives_up_at_memory_wait_with_a_warning() -> None:
    w = World(m("a", 0.8), m("b", 0.5), total_memory=100 * GIB, memory_wait=60)
    w.acquire(1, "a")
    w.ready("a")
    w.release(1, "a")
    w.acquire(2, "b")
    w.stopped("a")
    w.s.memory("b", 10 * GIB, w.now)
    w.advance(59)
    assert w.fake.starts() == ["a"]
    w.advance(1)
    assert w.fake.starts() == ["a", "b"] and w.fake.watching == {}
    assert any("memory_wait expired" in x for x in w.fake.warnings)


def test_no_gate_when_the_model_fits_without_stopping_anything() -> None:
    w = World(m("a", 0.3), m("b", 0.3), total_memory=100 * GIB)
    w.acquire(1, "a")
    w.acquire(2, "b")
    assert w.fake.starts() == ["a", "b"] and w.fake.watching == {}


def test_queue_cap_and_prefer_wait_zero() -> None:
    w = World(m("a"), queue_limit=2)
    w.acquire(1, "a")
    w.acquire(2, "a")
    with pytest.raises(QueueFullError) as exc:
        w.acquire(3, "a")
    assert exc.value.retry_after and exc.value.retry_after >= 1
    w2 = World(m("a"))
    with pytest.raises(ModelLoadingError) as loading:
        w2.acquire(1, "a", wait=False)
    assert loading.value.retry_after == 30 and w2.fake.starts() == ["a"]  # but the start is under way
    w2.advance(12)
    with pytest.raises(ModelLoadingError) as loading:
        w2.acquire(2, "a", wait=False)
    assert loading.value.retry_after == 18  # the estimate counts down
    w2.ready("a")
    assert w2.acquire(3, "a", wait=False) is GRANTED and w2.s.view("a").last_load_seconds == 12


def test_max_concurrent_queues_the_excess() -> None:
    w = World(m("a", max_concurrent=2))
    for req in range(4):
        w.acquire(req, "a")
    w.ready("a")
    assert w.fake.granted == [0, 1]
    assert w.acquire(9, "a") is QUEUED  # behind 2 and 3
    w.release(0, "a")
    assert w.fake.granted == [0, 1, 2]
    w.release(1, "a")
    w.release(2, "a")
    assert w.fake.granted == [0, 1, 2, 3, 9]


def test_a_swap_nobody_waits_for_any_more_is_called_off() -> None:
    w = World(m("a"), m("b"))
    w.acquire(1, "a")
    w.ready("a")
    w.acquire(2, "b")
    assert w.state("a") is ModelState.DRAINING
    w.s.cancel(2, w.now)  # b's client went away
    assert w.state("a") is ModelState.READY and w.state("b") is ModelState.STOPPED
    assert w.acquire(3, "a") is GRANTED and ("drain", "a") not in w.fake.timers


def settle(w: World, held: dict[int, str], waiting: dict[int, str]) -> None:
    """A walk's bookkeeping after a step: granted waiters now hold, rejected ones are gone, and an
    aborted lease is released as its handler would."""
    for r in list(waiting):
        if r in w.fake.granted:
            held[r] = waiting.pop(r)
        elif r in w.fake.rejected:
            waiting.pop(r)
    for r in list(held):
        if r in w.fake.aborted:
            w.release(r, held.pop(r))


def drain_all(w: World, held: dict[int, str], waiting: dict[int, str]) -> None:
    """The end of a walk: every response ends and every job completes; no waiter is left behind."""
    for _ in range(200):
        for r in list(held):
            w.release(r, held.pop(r))
        for name in sorted(w.fake.running):
            if w.state(name) is ModelState.STARTING:
                w.ready(name)
            elif w.state(name) is ModelState.STOPPING:
                w.stopped(name)
        for model in list(w.fake.watching):
            w.s.memory(model, 100 * GIB, w.now)
        settle(w, held, waiting)
        w.advance(60)
    assert not waiting, f"requests never settled: {waiting}"


def test_random_traffic_keeps_every_invariant() -> None:
    """A seeded random walk over requests, releases, job completions, crashes and time."""
    models = [m("u", 0.05, pinned=True), m("a", 0.6), m("b", 0.3), m("c", 0.5), m("x", 0.4, exclusive=True)]
    rng = random.Random(7)
    for _ in range(20):
        w = World(*models, drain_timeout=50, total_memory=100 * GIB)
        w.s._schedule(w.now)  # as the daemon's first view of systemd does: the pinned model starts
        held: dict[int, str] = {}
        waiting: dict[int, str] = {}
        for step in range(400):
            req = step + 1
            roll = rng.random()
            if roll < 0.35:
                model = rng.choice(models).id
                try:
                    if w.acquire(req, model) is GRANTED:
                        held[req] = model
                    else:
                        waiting[req] = model
                except SparkError:
                    pass
            elif roll < 0.6 and held:
                r = rng.choice(sorted(held))
                w.release(r, held.pop(r))
            elif roll < 0.8:
                for name in sorted(w.fake.running):
                    st = w.state(name)
                    if st is ModelState.STARTING and rng.random() < 0.7:
                        w.fail(name) if rng.random() < 0.1 else w.ready(name)
                    elif st is ModelState.STOPPING:
                        w.stopped(name)
            elif roll < 0.85 and w.fake.watching:
                model = next(iter(w.fake.watching))
                w.s.memory(model, 100 * GIB, w.now)
            elif roll < 0.87 and w.fake.running:
                name = rng.choice(sorted(w.fake.running))
                if w.state(name) is ModelState.READY:
                    w.fake.running.discard(name)
                    w.s.unit_state(name, ActiveState.FAILED, w.now)
            elif roll < 0.89:  # an engine hangs (or a late report about one arrives)
                w.s.engine_hung(rng.choice(models).id, "unanswered", w.now)
            elif roll < 0.9:  # a footprint is learned, above (or below) the declared share
                name = rng.choice([m.id for m in models if m.id not in w.fake.running])
                share = rng.choice([0.1, 0.45, 0.7])
                w.s.learned_memory(name, int(share * 100 * GIB))
                w.fake.learned[name] = share
            else:
                w.advance(rng.choice([1, 5, 30, 100]))
            settle(w, held, waiting)
            w.fake.check()
            assert_settled(w)
            for view in w.s.views():  # leases only on serving models
                if view.leases:
                    assert view.state in (ModelState.READY, ModelState.DRAINING), view
                eta = w.s.eta(view.id, w.now).seconds  # an estimate for every model, at every step
                assert (eta == 0) is (view.state is ModelState.READY) and eta < 10_000, (view, eta)
        # no request is left behind: drain everything and every waiter is settled
        drain_all(w, held, waiting)


def assert_settled(w: World) -> None:
    """Every event leaves the scheduler settled: settling again changes nothing. (A request's
    release settles only its own model when nothing waits, #18: this is what makes that right.)"""
    fake = w.fake
    before = (len(fake.calls), dict(fake.timers), len(fake.granted), len(fake.states), len(fake.aborted))
    w.s._schedule(w.now)
    after = (len(fake.calls), dict(fake.timers), len(fake.granted), len(fake.states), len(fake.aborted))
    assert after == before, f"settling again changed something: {fake.calls[before[0] :]}"


@dataclass
class FlakyBus(Fake):
    """A Fake whose connection to systemd can be down. Jobs in flight when it goes are lost (their
    answer is `job_lost`); a stop asked for while it is down never reaches systemd (`job_lost`
    too); a start asked for meanwhile is held, as SupervisorEffects holds it, and dropped at the
    reconnection, where the scheduler decides afresh. systemd's truth (`running`) only changes by
    what reaches it."""

    down = False
    held: list[str] = field(default_factory=list)

    def start_unit(self, model: str) -> None:
        if self.down:
            self.calls.append(("held-start", model))
            self.held.append(model)
        else:
            super().start_unit(model)

    def stop_unit(self, model: str) -> None:
        self.calls.append(("lost-stop" if self.down else "stop", model))


def test_random_traffic_with_lost_connections_keeps_every_invariant() -> None:
    """The walk above, with the connection to systemd lost and found: jobs in flight are lost,
    jobs asked for meanwhile never happen, and every waiter is still settled, never over budget."""
    models = [m("u", 0.05, pinned=True), m("a", 0.6), m("b", 0.3), m("x", 0.4, exclusive=True)]
    rng = random.Random(11)
    lost_jobs = 0
    for _ in range(20):
        w = World(*models, drain_timeout=50)
        w.fake = FlakyBus(w.fake.infos, w.fake.budget)
        w.s = Scheduler(models, w.fake, memory_budget=w.fake.budget, drain_timeout=50)
        w.s._schedule(w.now)  # as the daemon's first view of systemd does: the pinned model starts
        held: dict[int, str] = {}
        waiting: dict[int, str] = {}
        for step in range(300):
            roll = rng.random()
            if roll < 0.35:
                try:
                    model = rng.choice(models).id
                    (held if w.acquire(step, model) is GRANTED else waiting)[step] = model
                except SparkError:
                    pass
            elif roll < 0.6 and held:
                r = rng.choice(sorted(held))
                w.release(r, held.pop(r))
            elif roll < 0.8 and not w.fake.down:
                for name in sorted(w.fake.running):
                    if w.state(name) is ModelState.STARTING:
                        w.ready(name)
                    elif w.state(name) is ModelState.STOPPING:
                        w.stopped(name)
            elif roll < 0.85:
                w.fake.down = not w.fake.down
                if w.fake.down:  # whatever was in flight is lost
                    for info in models:
                        w.s.job_lost(info.id, "lost the connection to systemd", w.now)
                else:  # found again: systemd's truth, read afresh; the starts that waited go ahead
                    reconnect(w, models)
            else:
                w.advance(rng.choice([1, 5, 30, 100]))
            if w.fake.down:  # a stop asked for meanwhile never reached systemd
                for c in w.fake.calls[-4:]:
                    if c[0] == "lost-stop":
                        w.s.job_lost(c[1], "not connected to systemd", w.now)
            settle(w, held, waiting)
            assert_settled(w)
            w.fake.check()
        w.fake.down = False
        reconnect(w, models)
        drain_all(w, held, waiting)
        lost_jobs += sum(1 for c in w.fake.calls if c[0] in ("lost-stop", "held-start"))
    assert lost_jobs > 20  # the walks did lose (or hold) jobs along the way


def reconnect(w: World, models: list[ModelInfo]) -> None:
    assert isinstance(w.fake, FlakyBus)
    truth = {i.id: ActiveState.ACTIVE if i.id in w.fake.running else ActiveState.INACTIVE for i in models}
    w.fake.held.clear()
    w.s.resync(truth, w.now)
