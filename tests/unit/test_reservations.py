"""Another node's reservation of this one for the worker part of a model it owns (#15), as the
pure scheduler honours it: FIFO with local requests, the tenants drained and stopped, the memory
gate, then the node held — no local start — until released or expired.

Every step also checks the node's one tenant: while a reservation is held, nothing runs here but
its worker part (and the base fake's check: an exclusive model runs alone)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from sparkctl.core.scheduler import GRANTED, QUEUED, Scheduler
from sparkctl.core.states import ActiveState, ModelInfo, ModelState
from sparkctl.errors import ReservationError, SparkError
from tests.unit.test_scheduler import GIB, Fake, World, drain_all, m, settle

BIG = "big"  # the spanning model; this node runs its worker part
LEASE = 30.0


@dataclass
class ReservingFake(Fake):
    scheduler: Scheduler | None = None  # read (never driven) for which reservations are held

    def reservation_settled(self, model: str, holder: str, error: SparkError | None) -> None:
        super().reservation_settled(model, holder, error)
        if error is None:
            assert not self.running - {model}, f"granted while {sorted(self.running)} run"
        self.check()

    def check(self) -> None:
        super().check()
        assert self.scheduler is not None
        for view in self.scheduler.views():
            if view.reserved_by is not None:
                assert not self.running - {view.id}, f"{sorted(self.running)} run while held for {view.id}"


class Node(World):
    fake: ReservingFake

    def __init__(self, *models: ModelInfo, total_memory: int = 0, **kw: float) -> None:
        super().__init__(*models, total_memory=total_memory, fake=ReservingFake, **kw)
        self.fake.scheduler = self.s

    def reserve(self, holder: str = "spark-a", lease: float = LEASE) -> bool:
        return self.s.reserve(BIG, holder, self.now + lease, self.now)

    def release_reservation(self, holder: str = "spark-a") -> None:
        self.s.release_reservation(BIG, holder, self.now)

    def hold(self, seconds: float) -> None:
        """Let time pass as an owner that keeps renewing its reservation would."""
        for _ in range(int(seconds // (LEASE / 2))):
            self.advance(LEASE / 2)
            self.reserve()


def worker(fraction: float = 0.85) -> ModelInfo:
    return m(BIG, fraction, exclusive=True, worker=True)


def test_a_free_node_is_reserved_at_once_then_held_against_local_starts() -> None:
    n = Node(worker(), m("a", 0.5))
    assert n.reserve() is True and n.fake.settled == [(BIG, "spark-a", None)]
    assert n.s.view(BIG).reserved_by == "spark-a" and n.state(BIG) is ModelState.STOPPED
    assert n.acquire(1, "a") is QUEUED  # a local request waits: the node is held
    assert n.fake.starts() == []
    n.s.admin_start(BIG, n.now)  # the owner starts its worker part here
    assert n.fake.starts() == [BIG]
    n.ready(BIG)
    n.hold(3600)  # a worker never idles out here: its owner stops it
    assert n.state(BIG) is ModelState.READY and n.fake.stops() == []
    n.release_reservation()
    assert n.fake.stops() == [BIG] and n.fake.starts() == [BIG]  # "a" waits for the stop
    n.stopped(BIG)
    assert n.fake.starts() == [BIG, "a"]
    n.ready("a")
    assert 1 in n.fake.granted


def test_the_reservation_waits_its_turn_behind_earlier_requests_and_before_later_ones() -> None:
    n = Node(worker(), m("a", 0.5), m("b", 0.5))
    assert n.acquire(1, "a") is QUEUED  # "a" starts
    assert n.reserve() is False  # behind "a"'s request: it is served first
    assert n.acquire(2, "b") is QUEUED  # behind the reservation
    n.ready("a")
    assert n.fake.granted == [1] and n.fake.settled == []
    n.release(1, "a")  # "a" stops at once (idle_timeout elapsed? no: drained for the reservation)
    assert n.state("a") is ModelState.STOPPING
    n.stopped("a")
    assert n.fake.settled == [(BIG, "spark-a", None)]
    assert n.fake.starts() == ["a"]  # "b" waits behind the held node
    n.release_reservation()
    assert n.fake.starts() == ["a", "b"]


def test_tenants_drain_and_the_memory_gate_holds_before_the_grant() -> None:
    n = Node(worker(), m("a", 0.5), total_memory=100 * GIB, drain_timeout=50)
    assert n.acquire(1, "a") is QUEUED
    n.ready("a")
    assert n.reserve() is False
    assert n.state("a") is ModelState.DRAINING  # its request in flight finishes first
    assert n.acquire(2, "a") is QUEUED  # new ones queue behind the reservation
    n.release(1, "a")
    n.stopped("a")
    assert n.fake.watching == {BIG: int(0.85 * 100 * GIB)} and n.fake.settled == []
    n.s.memory(BIG, 50 * GIB, n.now)
    assert n.fake.settled == []
    n.s.memory(BIG, 90 * GIB, n.now)
    assert n.fake.settled == [(BIG, "spark-a", None)] and not n.fake.watching
    assert 2 not in n.fake.granted and n.fake.starts() == ["a"]


def test_a_drain_that_outlasts_drain_timeout_ends_its_requests_as_for_a_local_swap() -> None:
    n = Node(worker(), m("a", 0.5), drain_timeout=50)
    n.acquire(1, "a")
    n.ready("a")
    n.reserve(lease=600)
    n.advance(51)
    assert isinstance(n.fake.aborted.get(1), SparkError) and n.fake.stops() == ["a"]
    n.stopped("a")
    assert n.fake.settled == [(BIG, "spark-a", None)]


def test_an_unrenewed_reservation_runs_out_and_frees_the_node() -> None:
    n = Node(worker(), m("a", 0.5))
    n.reserve()
    n.s.admin_start(BIG, n.now)
    n.ready(BIG)
    n.advance(LEASE / 2)
    n.reserve()  # renewed: runs until now + LEASE
    n.advance(LEASE * 0.9)
    assert n.s.view(BIG).reserved_by == "spark-a"
    assert n.acquire(1, "a") is QUEUED
    n.advance(LEASE * 0.2)
    assert n.s.view(BIG).reserved_by is None and n.fake.stops() == [BIG]
    assert any("ran out without renewal" in w for w in n.fake.warnings)
    n.stopped(BIG)
    assert n.fake.starts() == [BIG, "a"]


def test_a_waiting_reservation_released_or_expired_is_settled_with_an_error_and_calls_off_its_drain() -> None:
    n = Node(worker(), m("a", 0.5), drain_timeout=500)
    n.acquire(1, "a")
    n.ready("a")
    n.reserve(lease=10)
    assert n.state("a") is ModelState.DRAINING
    n.advance(11)
    ((model, holder, error),) = n.fake.settled
    assert (model, holder) == (BIG, "spark-a") and isinstance(error, ReservationError)
    assert "ran out" in error.message
    assert n.state("a") is ModelState.READY  # serves again: nobody waits for the node any more
    assert n.acquire(2, "a") is GRANTED
    n.reserve()
    n.release_reservation()
    assert (
        isinstance(n.fake.settled[-1][2], ReservationError)
        and "released by spark-a" in n.fake.settled[-1][2].message
    )
    assert n.state("a") is ModelState.READY and n.fake.stops() == []


def test_what_is_refused() -> None:
    n = Node(worker(), m("a", 0.5))
    with pytest.raises(ReservationError, match="no worker part of 'a'"):
        n.s.reserve("a", "spark-a", n.now + LEASE, n.now)
    with pytest.raises(ReservationError, match="none holds it"):
        n.s.admin_start(BIG, n.now)  # no local start of a worker part
    with pytest.raises(ReservationError, match="served by the node that owns it"):
        n.acquire(1, BIG)
    n.reserve("spark-a")
    with pytest.raises(ReservationError, match="reserved for 'big' by spark-a, not spark-c"):
        n.reserve("spark-c")
    n.release_reservation("spark-c")  # not its: nothing happens
    assert n.s.view(BIG).reserved_by == "spark-a"
    with pytest.raises(ValueError, match="exclusive"):
        m(BIG, 0.5, worker=True)


def test_a_pinned_model_does_not_come_back_while_the_node_is_held() -> None:
    n = Node(worker(), m("u", 0.05, pinned=True))
    n.s.admin_start("u", n.now)
    n.ready("u")
    n.reserve()
    n.stopped("u")
    assert n.fake.settled == [(BIG, "spark-a", None)]
    n.hold(100)
    assert n.fake.starts() == ["u"]
    n.release_reservation()
    assert n.fake.starts() == ["u", "u"]  # back once the node is free


def test_a_worker_that_fails_keeps_the_node_held_and_can_be_started_again() -> None:
    n = Node(worker(), m("a", 0.5))
    n.reserve()
    n.s.admin_start(BIG, n.now)
    n.fail(BIG)
    n.s.admin_start(BIG, n.now)
    n.fail(BIG)
    # Each start is its owner's word, as an operator's start is: no back-off builds up here.
    assert n.state(BIG) is ModelState.FAILED
    assert n.acquire(1, "a") is QUEUED and n.s.view(BIG).reserved_by == "spark-a"
    n.s.admin_start(BIG, n.now)
    assert n.fake.starts() == [BIG, BIG, BIG]
    n.ready(BIG)
    n.fake.running.discard(BIG)
    n.s.unit_state(BIG, ActiveState.FAILED, n.now)  # dies while running: the node stays held
    assert n.s.view(BIG).reserved_by == "spark-a" and n.fake.starts() == [BIG, BIG, BIG]


def test_random_traffic_with_reservations_keeps_every_invariant() -> None:
    """A seeded walk over local requests, the owner's reservations, renewals, releases, worker
    starts and crashes, job completions and time."""
    models = [worker(), m("u", 0.05, pinned=True), m("a", 0.6), m("b", 0.3), m("x", 0.4, exclusive=True)]
    local = [i.id for i in models if i.id != BIG]
    rng = random.Random(15)
    for _ in range(15):
        n = Node(*models, drain_timeout=50, total_memory=100 * GIB)
        held: dict[int, str] = {}
        waiting: dict[int, str] = {}
        for step in range(400):
            req = step + 1
            roll = rng.random()
            if roll < 0.3:
                model = rng.choice(local)
                try:
                    if n.acquire(req, model) is GRANTED:
                        held[req] = model
                    else:
                        waiting[req] = model
                except SparkError:
                    pass
            elif roll < 0.45 and held:
                r = rng.choice(sorted(held))
                n.release(r, held.pop(r))
            elif roll < 0.52:
                n.reserve(lease=rng.choice([10, 60]))
            elif roll < 0.56:
                n.release_reservation()
            elif roll < 0.6:
                try:
                    n.s.admin_start(BIG, n.now)
                except ReservationError:
                    assert n.s.view(BIG).reserved_by is None
            elif roll < 0.78:
                for name in sorted(n.fake.running):
                    st = n.state(name)
                    if st is ModelState.STARTING and rng.random() < 0.7:
                        n.fail(name) if rng.random() < 0.1 else n.ready(name)
                    elif st is ModelState.STOPPING:
                        n.stopped(name)
            elif roll < 0.83 and n.fake.watching:
                n.s.memory(next(iter(n.fake.watching)), 100 * GIB, n.now)
            elif roll < 0.85 and n.fake.running:
                name = rng.choice(sorted(n.fake.running))
                if n.state(name) is ModelState.READY:
                    n.fake.running.discard(name)
                    n.s.unit_state(name, ActiveState.FAILED, n.now)
            else:
                n.advance(rng.choice([1, 5, 30, 100]))
            settle(n, held, waiting)
            n.fake.check()
            held_for = n.s.view(BIG).reserved_by
            assert held_for is None or not n.fake.running - {BIG}
            for view in n.s.views():  # an estimate for every model at every step, reservations or not
                assert n.s.eta(view.id, n.now).seconds < 10_000, view
        drain_all(n, held, waiting)  # reservations run out; every local request is then served


# ------------------------------------------------------------------------------ the owner's side
def test_a_renewal_never_makes_a_new_reservation_and_says_when_the_node_is_wanted_back() -> None:
    n = Node(worker(), m("a", 0.5))
    with pytest.raises(ReservationError, match="holds no reservation for 'big' by spark-a any more"):
        n.s.reserve(BIG, "spark-a", n.now + LEASE, n.now, renew=True)  # it ran out, or never was
    assert n.s.reservations() == {}
    assert n.reserve() is True and n.s.wanted_back(BIG) is False
    assert n.acquire(1, "a") is QUEUED  # this node's own request waits for the held node …
    assert n.s.wanted_back(BIG) is True  # … which the owner hears of when it renews
    assert n.s.reserve(BIG, "spark-a", n.now + LEASE, n.now, renew=True) is True
    n.release_reservation()
    n.advance(1)
    assert n.fake.starts() == ["a"]


def test_an_owner_whose_other_node_is_lost_ends_its_requests_with_that_error_and_stops() -> None:
    from sparkctl.errors import PeerUnavailableError

    w = Node(m("span", 0.85, exclusive=True))
    assert w.acquire(1, "span") is QUEUED
    w.ready("span")
    assert 1 in w.fake.granted
    lost = PeerUnavailableError("spark-b does not answer, and the model 'span' spans it.")
    w.s.part_lost("span", lost, w.now)
    assert w.fake.aborted[1] is lost and w.fake.stops() == ["span"]
    assert w.state("span") is ModelState.STOPPING
    w.s.part_lost("span", lost, w.now)  # a second report changes nothing
    assert w.fake.stops() == ["span"]
    w.stopped("span")
    assert w.acquire(2, "span") is QUEUED and w.fake.starts() == ["span", "span"]  # asked afresh


def test_an_owner_gives_a_node_back_as_for_a_local_swap() -> None:
    w = Node(m("span", 0.85, exclusive=True), drain_timeout=20)
    assert w.acquire(1, "span") is QUEUED
    w.ready("span")
    w.s.part_wanted("span", w.now)
    assert w.state("span") is ModelState.DRAINING and w.fake.stops() == []  # its request finishes
    assert w.acquire(2, "span") is QUEUED  # a new one waits for the next start
    w.release(1, "span")
    assert w.fake.stops() == ["span"]
    w.stopped("span")
    assert w.fake.starts() == ["span", "span"]  # started again for the waiting request
    w.ready("span")
    assert 2 in w.fake.granted


def test_a_drain_for_a_node_wanted_back_is_bounded_by_drain_timeout() -> None:
    w = Node(m("span", 0.85, exclusive=True), drain_timeout=20)
    w.acquire(1, "span")
    w.ready("span")
    w.s.part_wanted("span", w.now)
    w.advance(21)
    assert 1 in w.fake.aborted and w.fake.stops() == ["span"]


def test_a_start_that_failed_on_another_node_tells_its_waiters_that_nodes_error() -> None:
    from sparkctl.core.states import JobResult
    from sparkctl.errors import ModelStartFailedError

    w = Node(m("span", 0.85, exclusive=True))
    assert w.acquire(1, "span") is QUEUED
    error = ModelStartFailedError("The model 'span' cannot start: on spark-b, weights … missing.")
    w.fake.running.discard("span")
    w.s.start_finished("span", JobResult.FAILED, "other-node", w.now, "", error)
    assert w.fake.rejected[1] is error
