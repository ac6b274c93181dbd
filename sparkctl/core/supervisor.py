"""The supervisor: the one task that owns model state.

Everything that changes it — requests wanting a lease, leases ending, systemd's job results and
unit changes, timers, memory readings, operators' commands — is a message in one inbox
(`messages.py`), and the owner task applies each to the synchronous `Scheduler` in turn. The
scheduler's effects are performed by `SupervisorEffects` (`effects.py`), whose outcomes come back
as messages. Callers never read state to decide anything themselves; they ask and await
(STYLE.md §1–2). Views are snapshots for display, and state changes reach subscribers as they
happen.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sparkctl.catalog import Catalog, Model, span
from sparkctl.core import held
from sparkctl.core import messages as msg
from sparkctl.core.effects import SupervisorEffects
from sparkctl.core.estimate import Eta, guess_load
from sparkctl.core.host import MEMINFO, read_meminfo
from sparkctl.core.learned import Learned
from sparkctl.core.lease import Lease
from sparkctl.core.liveness import Liveness
from sparkctl.core.messages import AdminAction
from sparkctl.core.parts import Parts, PeerLink
from sparkctl.core.preflight import lacks
from sparkctl.core.scheduler import GRANTED, Scheduler
from sparkctl.core.states import ActiveState, ModelInfo, ModelState, ModelView
from sparkctl.core.systemd import Event, Systemd, UnitChanged
from sparkctl.core.weights import weights_size
from sparkctl.errors import ModelStartFailedError, SparkError
from sparkctl.settings import ClusterSettings, Settings
from sparkctl.units.names import service_name

log = logging.getLogger("sparkctl.supervisor")
RECONNECT_FIRST = 0.2  # seconds before the first try to connect to systemd again …
RECONNECT_MAX = 30.0  # … doubling up to this
StateListener = Callable[[str, ModelState], object]

__all__ = ["Lease", "StateListener", "Supervisor", "model_info"]


def model_info(model: Model, cluster: ClusterSettings | None = None) -> ModelInfo:
    """What the scheduler knows of `model`; in a cluster, whether this node runs only a worker
    part of it, or no part at all (a spanning model another node owns: never started here but at
    its owner's word)."""
    spec = model.spec
    spanning = cluster is not None and spec.serve.nodes > 1
    part = span.part(spec, cluster) if cluster is not None and spanning else None
    return ModelInfo(
        id=spec.id,
        fraction=spec.engine.gpu_memory_utilization,
        exclusive=spec.serve.gpu == "exclusive",
        pinned=spec.serve.pinned,
        preload=spec.serve.preload,
        idle_timeout=model.idle_timeout,
        max_concurrent=spec.serve.max_concurrent,
        start_timeout=spec.serve.start_timeout,
        unit=service_name(spec.id),
        worker=spanning and (part is None or part.role == "worker"),
    )


@dataclass
class Supervisor:
    catalog: Catalog
    settings: Settings
    meminfo: Path = MEMINFO
    # The other nodes as this one reaches them (gateway/peers.py reads their keys): needed to
    # start the models this node owns that span them (#15).
    peers: Sequence[PeerLink] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[msg.Message] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._listeners: list[StateListener] = []
        self._units = {service_name(m.id): m.id for m in self.catalog.enabled}
        self._fx = SupervisorEffects(
            self.catalog,
            self.settings,
            post=self._post,
            settle=self._settle,
            on_state=self._notify,
            meminfo=self.meminfo,
        )
        self._applying = False  # inside `_apply`: what comes meanwhile waits in the inbox
        self._scheduler: Scheduler | None = None
        self._owner: asyncio.Task[None] | None = None
        self._bus_keeper: asyncio.Task[None] | None = None
        self._liveness: asyncio.Task[None] | None = None
        self._learned = Learned(None)
        self._before: dict[str, ModelState] = {}  # each model's previous state, for learning
        # The one writer of the state files (learned.json, the held reservations): two writes of
        # one file in flight could land in either order, the older last.
        self._saver: asyncio.Task[None] | None = None
        self._unsaved: set[str] = set()
        self._held_text = ""
        self._fresh: Systemd | None = None  # a new connection on its way to the owner
        self._degraded: str | None = None
        self._session: aiohttp.ClientSession | None = None  # to the nodes its spanning models span
        self._checking: dict[str, asyncio.Future[None]] = {}  # each spanning model's nodes, asked

    def _spanning_heads(self) -> dict[str, span.Part]:
        """The enabled models this node runs the head of, spanning other nodes."""
        cluster = self.settings.cluster
        heads = {}
        for m in self.catalog.enabled:
            if m.spec.serve.nodes > 1 and (p := span.part(m.spec, cluster)) is not None and p.role == "head":
                heads[m.id] = p
        return heads

    def _span_clients(self) -> dict[str, Parts]:
        heads = self._spanning_heads()
        if not heads:
            return {}
        links = {p.name: p for p in self.peers}
        missing = sorted({n for p in heads.values() for n in p.nodes[1:]} - set(links))
        if missing:  # (the daemon reads every configured peer's key: only a caller can forget)
            raise RuntimeError(f"the spanning models this node owns need a link to {', '.join(missing)}")
        # Limits: a node that does not answer fails a call within its own bounds (parts.py).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        cluster = self.settings.cluster
        return {
            model: Parts(
                model,
                cluster.node,
                [links[n] for n in p.nodes[1:]],
                self._session,
                lease=cluster.reservation_lease,
                fingerprint=span.fingerprint(self.catalog.models[model].spec),
            )
            for model, p in heads.items()
        }

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self, *, preload: bool = False) -> None:
        """Connect to systemd, adopt what runs (restarting nothing), then serve the inbox."""
        total = (await asyncio.to_thread(read_meminfo, self.meminfo)).get("MemTotal", 0)
        sched = self.settings.scheduler
        self._scheduler = Scheduler(
            [model_info(m, self.settings.cluster) for m in self.catalog.enabled],
            self._fx,
            memory_budget=sched.memory_budget,
            drain_timeout=sched.drain_timeout,
            memory_wait=sched.memory_wait,
            queue_limit=self.settings.gateway.queue_limit,
            total_memory=total,
        )
        self._learned = await asyncio.to_thread(Learned.load, self.settings.runtime.state_dir)
        sizes = await asyncio.to_thread(self._weights_sizes)
        for model in self.catalog.enabled:
            self._sized(model.id, sizes[model.id])
            if (record := self._learned.records.get(model.id)) is None:
                continue
            if (typical := record.typical_load) is not None:
                self._scheduler.learned_load(model.id, typical)
            if (stop := record.typical_stop) is not None:
                self._scheduler.learned_stop(model.id, stop)
            if record.memory_bytes:
                self._scheduler.learned_memory(model.id, record.memory_bytes)
        self._listeners.append(self._learn)  # first: estimates are right for those after it
        self._fx.spans = self._span_clients()
        self._fx.systemd, states = await self._connect()
        self._fx.bus_ready.set()
        now = self._loop.time()
        self._scheduler.adopt(states, now)
        for spanning in self._fx.spans:  # what runs keeps its other nodes, renewed from now on
            self._fx.engage(spanning, self._scheduler.state(spanning))
        await self._hold_again(now)
        if preload:
            self._scheduler.preload(now)
        self._owner = asyncio.create_task(self._run(), name="sparkctl-supervisor")
        self._bus_keeper = asyncio.create_task(self._keep_bus(), name="sparkctl-bus")
        liveness = Liveness(self.catalog, self.settings, self.views, self._post)
        self._liveness = asyncio.create_task(liveness.run(), name="sparkctl-liveness")
        log.info("supervisor ready; adopted running models: %s", _running(states))

    async def _hold_again(self, now: float) -> None:
        """Hold this node again for the reservations it held when the daemon stopped (#15), each
        until its lease runs out, so the worker part just adopted keeps the node."""
        wall = time.time()
        for h in await asyncio.to_thread(held.load, self.settings.runtime.state_dir, wall):
            try:
                granted = self._sched.reserve(h.model, h.holder, now + (h.until - wall), now)
            except SparkError as e:  # the catalog changed meanwhile: it is not a worker part here
                log.warning("not held again for %s: %s", h.model, e.message)
                continue
            log.info("held again for %s by %s (%s)", h.model, h.holder, "held" if granted else "waiting")

    def _save_held(self) -> None:
        """Keep the reservations as they are now, in wall-clock time (taken here, on the loop)."""
        content = held.text(
            held.Held(model, holder, self.loop_to_wall(until))
            for model, (holder, until) in sorted(self._sched.reservations().items())
        )
        self._held_text = content
        self._save("held")

    def _weights_sizes(self) -> dict[str, int]:
        hf_cache = self.settings.runtime.hf_cache
        return {
            m.id: weights_size(hf_cache, m.spec.source.hf_repo, m.spec.source.revision)
            for m in self.catalog.enabled
        }

    def _sized(self, model: str, weights: int) -> None:
        """What its weights on disk tell: the least it takes, and a load time before any history."""
        self._sched.weights(model, weights)
        self._sched.guessed_load(model, guess_load(weights))

    async def _connect(self) -> tuple[Systemd, dict[str, ActiveState]]:
        """A connection to systemd, subscribed to its signals, and its view of every model unit."""
        systemd = await Systemd.connect(self.settings.systemd.bus, on_event=self._on_systemd)
        try:
            listed = await systemd.list_units(list(self._units))
        except BaseException:
            await systemd.close()
            raise
        states = dict.fromkeys(self._units.values(), ActiveState.INACTIVE)
        for unit, active, _sub in listed:
            parsed = ActiveState.parse(active)
            if unit in self._units and parsed is not None:
                states[self._units[unit]] = parsed
        return systemd, states

    async def _keep_bus(self) -> None:
        """When the connection to systemd is lost: its pending jobs fail at once (their waiters
        get an error), ready models keep serving, and it is made again with back-off; then
        systemd's view is read afresh and followed, as at start-up."""
        systemd = self._fx.systemd
        while systemd is not None:
            reason = await systemd.wait_lost()
            if not reason:
                return  # closed by us
            self._fx.bus_ready.clear()
            self._degraded = f"lost the connection to systemd ({reason}); reconnecting"
            log.error("%s", self._degraded)
            systemd, states = await self._reconnect()
            self._fresh = systemd
            self._post(msg.Resync(systemd, states))
            self._degraded = None
            log.info("connected to systemd again; following it: running %s", _running(states))

    async def _reconnect(self) -> tuple[Systemd, dict[str, ActiveState]]:
        delay = RECONNECT_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._connect()
            except SparkError as e:
                delay = min(delay * 2, RECONNECT_MAX)
                self._degraded = f"no connection to systemd ({e.message}); next try in {delay:g}s"
                log.warning("%s", self._degraded)

    async def close(self) -> None:
        for task in (self._liveness, self._bus_keeper, self._owner):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        while not self._inbox.empty():  # leases that ended as the daemon stopped: their last use
            if isinstance(message := self._inbox.get_nowait(), msg.Release):
                self._learned.record(message.model).last_used = time.time()
        if self._scheduler is not None:
            self._save_learned()  # (last use is saved only with other news, and here)
        if self._saver is not None:
            await asyncio.gather(self._saver, return_exceptions=True)  # what was learned is kept
        await self._fx.close()
        if self._session is not None:
            await self._session.close()
        for systemd in (self._fx.systemd, self._fresh):
            if systemd is not None:
                await systemd.close()

    @property
    def _sched(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("the supervisor has not been started")
        return self._scheduler

    async def _run(self) -> None:
        while True:
            self._apply(await self._inbox.get())

    def _apply(self, message: msg.Message) -> None:
        self._applying = True
        try:
            self._handle(message)
        except SparkError as e:
            future = getattr(message, "future", None)
            if future is not None and not future.done():
                future.set_exception(e)
            else:
                log.warning("%s", e)
        except Exception:
            log.exception("supervisor: failed to handle %r", message)
        finally:
            self._applying = False

    def _post(self, message: msg.Message) -> None:
        self._inbox.put_nowait(message)

    def _settle(self, message: msg.Message) -> None:
        """Apply `message` now if nothing waits in the inbox before it, else queue it. Applying it
        now is exactly what the owner task would do next, one loop turn later (#18: a request's
        grant and release, each one wake-up of the owner fewer). Every change still goes through
        `_apply`, one at a time (never from inside another: `_applying`), in inbox order."""
        if not self._applying and self._inbox.empty() and self._owner is not None and not self._owner.done():
            self._apply(message)
        else:
            self._post(message)

    def _handle(self, message: msg.Message) -> None:
        now = self._loop.time()
        s = self._sched
        match message:
            case msg.Acquire(request, model, wait, future):
                if future.done():  # the caller gave up before we got here
                    return
                self._fx.waiters[request] = message
                try:
                    granted = s.acquire(request, model, now, wait=wait) is GRANTED
                except SparkError:
                    self._fx.waiters.pop(request, None)
                    raise
                if granted:
                    self._fx.grant(request)
            case msg.Release(request, model):
                self._fx.lease_ended(request)
                s.release(request, model, now)
                self._learned.record(model).last_used = time.time()
            case msg.Cancel(request):
                if self._fx.waiters.pop(request, None) is not None:
                    s.cancel(request, now)
            case msg.StartFinished(model, result, unit_result, detail, error):
                s.start_finished(model, result, unit_result, now, detail, error)
            case msg.StopFinished(model):
                s.stop_finished(model, now)
            case msg.JobLost(model, reason):
                s.job_lost(model, reason, now)
            case msg.Resync(systemd, states):
                self._fx.systemd, self._fresh = systemd, None
                self._fx.reconnected()
                s.resync(states, now)
            case msg.Timer(key):
                s.timer(key, now)
                if key[0] == "reservation":
                    self._save_held()
            case msg.Memory(model, available):
                s.memory(model, available, now)
            case msg.Admin(action, model, future):
                self._admin_now(action, model, now)
                if not future.done():
                    future.set_result(None)
            case msg.UnitState(model, active):
                s.unit_state(model, active, now)
            case msg.EngineHung(model, reason):
                s.engine_hung(model, reason, now)
            case msg.PartLost(model, error):
                s.part_lost(model, error, now)
            case msg.PartWanted(model, node):
                if s.state(model) is ModelState.READY:
                    log.info("%s wants its node back: draining %s", node, model, extra={"model": model})
                s.part_wanted(model, now)
            case msg.Measured(model, footprint, exec_to_ready):
                if footprint is not None:
                    self._learned.record(model).memory_bytes = footprint
                    s.learned_memory(model, footprint)
                if exec_to_ready is not None:
                    self._learned.exec_loaded(model, exec_to_ready)
                self._save_learned()
            case msg.Sized(model, weights):
                self._sized(model, weights)
            case msg.Reserve(model, holder, lease, future, renew):
                granted = s.reserve(model, holder, now + lease, now, renew=renew)
                self._save_held()
                if not future.done():
                    future.set_result(granted)
            case msg.Unreserve(model, holder, future):
                s.release_reservation(model, holder, now)
                self._save_held()
                if not future.done():
                    future.set_result(None)
            case msg.EndAll(error, future):
                s.end_all(error)
                if not future.done():
                    future.set_result(None)

    def _admin_now(self, action: AdminAction, model: str, now: float) -> None:
        match action:
            case AdminAction.START:
                self._sched.admin_start(model, now)
            case AdminAction.STOP:
                self._sched.admin_stop(model, now)
            case AdminAction.STOP_NOW:
                self._sched.admin_stop(model, now, force=True)

    def _on_systemd(self, event: Event) -> None:
        # JobRemoved needs nothing here: our own jobs report through their futures.
        if isinstance(event, UnitChanged) and (model := self._units.get(event.unit)) is not None:
            self._post(msg.UnitState(model, event.active_state))

    # ------------------------------------------------------------------------------ API
    async def acquire(self, model: str, *, wait: bool = True) -> Lease:
        """A lease on `model`, once it is ready (or a SparkError saying why not)."""
        await self._check_nodes(model)
        request = next(self._ids)
        future: asyncio.Future[Lease] = self._loop.create_future()
        self._settle(msg.Acquire(request, model, wait, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()  # granted just as the caller went away
            else:
                self._post(msg.Cancel(request))
            raise

    def lease_now(self, model: str) -> Lease | None:
        """A lease on `model` if the scheduler grants it at once (ready, room for one more, nobody
        before it), without waiting: None otherwise, and nothing changed — the caller then waits
        in `acquire`. What a request's gateway path tries first: no timer, no await (#18)."""
        if self._applying or not self._inbox.empty() or self._owner is None or self._owner.done():
            return None
        if self._scheduler is None or not self._scheduler.grantable(model):
            return None
        request = next(self._ids)
        future: asyncio.Future[Lease] = self._loop.create_future()
        self._apply(msg.Acquire(request, model, True, future))
        if not future.done():  # (`grantable` said it would be granted: never queue behind a caller gone)
            self._settle(msg.Cancel(request))
            return None
        return future.result() if future.exception() is None else None

    async def start_model(self, model: str) -> None:
        await self._check_nodes(model)
        await self._admin(AdminAction.START, model)

    async def _check_nodes(self, model: str) -> None:
        """A spanning model that is down: before anything stops for it anywhere, every node it
        spans, this one too, is asked what it lacks; the first lack fails the request at once,
        naming the node and the fix (#15). Requests that come meanwhile share one check. (A
        snapshot of its state decides only whether to ask: the start asks the nodes again.)"""
        parts = self._fx.spans.get(model)
        if parts is None or self._sched.state(model) not in (ModelState.STOPPED, ModelState.FAILED):
            return
        checking = self._checking.get(model)
        if checking is None:
            checking = asyncio.ensure_future(self._check_now(model, parts))
            self._checking[model] = checking
            checking.add_done_callback(lambda done: self._checked(model, done))
        await asyncio.shield(checking)  # a caller that leaves does not end the others' check

    def _checked(self, model: str, done: asyncio.Future[None]) -> None:
        self._checking.pop(model, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have left before it ended

    async def _check_now(self, model: str, parts: Parts) -> None:
        spec = self.catalog.models[model].spec
        here = await asyncio.to_thread(
            lacks,
            model,
            self.settings.runtime.hf_cache,
            spec.source.hf_repo,
            spec.source.revision,
            spec.engine.image,
            self.catalog.models[model].extra_repos,
        )
        if here:
            node = self.settings.cluster.node
            raise ModelStartFailedError(
                f"The model '{model}' cannot start: on {node} (this node), {here[0].message}.",
                retry_after=30,
                hint=here[0].message,
            )
        await parts.check()

    async def stop_model(self, model: str, *, now: bool = False) -> None:
        await self._admin(AdminAction.STOP_NOW if now else AdminAction.STOP, model)

    async def stop_all(self, *, now: bool = False) -> None:
        for view in self.views():
            if view.state not in (ModelState.STOPPED, ModelState.FAILED):
                await self.stop_model(view.id, now=now)

    async def _admin(self, action: AdminAction, model: str) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        self._post(msg.Admin(action, model, future))
        await future

    async def reserve(self, model: str, holder: str, lease: float, *, renew: bool = False) -> bool:
        """Node `holder` reserves this node for the worker part of `model` for `lease` seconds
        (asking again renews): True once the node is held for it, False while it waits its turn.
        `renew`: only renew; one that ended is a ReservationError, not a new reservation."""
        future: asyncio.Future[bool] = self._loop.create_future()
        self._post(msg.Reserve(model, holder, lease, future, renew))
        return await future

    def wanted_back(self, model: str) -> bool:
        """Whether this node's own requests wait for the node another holds for `model` (a
        snapshot, reported to the holder when it renews)."""
        return self._sched.wanted_back(model)

    async def release_reservation(self, model: str, holder: str) -> None:
        """Node `holder` is done with this node: the worker part stops, the node is free."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._post(msg.Unreserve(model, holder, future))
        await future

    async def end_all(self, error: SparkError) -> None:
        """End every request now, waiting or served, with `error` (the daemon stops)."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._post(msg.EndAll(error, future))
        await future

    @property
    def in_flight(self) -> int:
        """Requests served or waiting, all models."""
        return sum(v.leases for v in self.views()) + self.queue_length

    def subscribe(self, listener: StateListener) -> None:
        """Call `listener(model, state)` on every state change, from the owner task: it must
        not block, and what it raises is logged, not propagated."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _learn(self, model: str, state: ModelState) -> None:
        """A start's outcome, learned: its load time once ready, or a failure; a stop's time;
        then saved."""
        before, self._before[model] = self._before.get(model), state
        if before is ModelState.STOPPING and state is ModelState.STOPPED:
            if (seconds := self._sched.view(model).last_stop_seconds) is not None:
                self._learned.stopped(model, seconds)
                self._sched.learned_stop(model, self._learned.records[model].typical_stop or seconds)
                self._save_learned()
            return
        if before is not ModelState.STARTING:
            return
        record = self._learned.record(model)
        if state is ModelState.READY:
            if (seconds := self._sched.view(model).last_load_seconds) is None:
                return
            self._learned.loaded(model, seconds)
            self._sched.learned_load(model, self._learned.typical_load(model) or seconds)
        elif state in (ModelState.FAILED, ModelState.BACKOFF):
            record.failures += 1
        else:
            return
        self._save_learned()

    def _save_learned(self) -> None:
        """Have learned.json written: by one writer task, so the newest text is always the last
        written (two writes in flight could land in either order)."""
        self._save("learned")

    def _save(self, what: str) -> None:
        self._unsaved.add(what)
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._write_state(), name="sparkctl-state")

    async def _write_state(self) -> None:
        while self._unsaved:
            if "held" in self._unsaved:
                self._unsaved.discard("held")
                await asyncio.to_thread(held.save, self.settings.runtime.state_dir, self._held_text)
                continue
            self._unsaved.discard("learned")
            await asyncio.to_thread(self._learned.save, self._learned.text())  # (text: on the loop)

    def footprint(self, model: str) -> int | None:
        """What `model` was last seen to take once ready, in bytes (None before that)."""
        record = self._learned.records.get(model)
        return record.memory_bytes if record else None

    def typical_load(self, model: str) -> float | None:
        """The learned typical load time of `model` (None before its first start)."""
        return self._learned.typical_load(model)

    def typical_exec_load(self, model: str) -> float | None:
        """The learned typical time from its engine's exec to ready (systemd's timestamps): the
        engine's own part of a load, without what comes before its exec (None before a start)."""
        record = self._learned.records.get(model)
        return record.typical_exec_load if record else None

    def load_guess(self, model: str) -> float | None:
        """Before any history: its load time guessed from its size on disk (else None)."""
        return self._sched.load_guess(model)

    def etas(self) -> dict[str, Eta]:
        """Every model's estimate that is ready, starting, backing off or waiting (one walk)."""
        return self._sched.etas(self._loop.time())

    def eta(self, model: str) -> Eta:
        """How long until `model` is likely ready (a snapshot): learned, or a guess before any
        history."""
        return self._sched.eta(model, self._loop.time())

    def _notify(self, model: str, state: ModelState) -> None:
        for listener in list(self._listeners):
            try:
                listener(model, state)
            except Exception:
                log.exception("state listener failed")

    def views(self) -> list[ModelView]:
        """A snapshot for status pages (reading is fine; deciding on it is not)."""
        return self._sched.views()

    def view(self, model: str) -> ModelView:
        return self._sched.view(model)

    @property
    def healthy(self) -> bool:
        """The owner task runs, and so does the task that keeps (or remakes) the connection to
        systemd: the watchdog pings only then. A lost connection alone is `degraded`, not
        unhealthy: ready models keep serving while it is made again."""
        return all(t is not None and not t.done() for t in (self._owner, self._bus_keeper))

    @property
    def degraded(self) -> str | None:
        """Why sparkctl cannot start or stop models right now, if it cannot."""
        return self._degraded

    @property
    def queue_length(self) -> int:
        return self._sched.queue_length

    def ahead_of(self, model: str) -> int:
        """Requests for other models queued before `model`'s (a snapshot, for display)."""
        return self._sched.ahead_of(model)

    def loop_to_wall(self, t: float) -> float:
        """A loop-clock instant as seconds since the epoch (for displays)."""
        return time.time() + (t - self._loop.time())


def _running(states: dict[str, ActiveState]) -> str:
    return ", ".join(sorted(m for m, s in states.items() if s is ActiveState.ACTIVE)) or "none"
