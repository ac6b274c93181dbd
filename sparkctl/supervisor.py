"""The supervisor: the one task that owns model state.

Everything that changes it — requests wanting a lease, leases ending, systemd's job results and
unit changes, timers, memory readings, operators' commands — is a message in one inbox, and the
owner task applies each to the synchronous `Scheduler` in turn. The scheduler's effects come back
here and are performed: systemd jobs run as child tasks that post their results to the inbox,
timers are `loop.call_at` handles, the memory gate polls MemAvailable only while it is open.
Callers never read state to decide anything themselves; they ask and await (STYLE.md §1–2).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, Model
from .errors import SparkError, UpstreamError
from .render import service_name
from .scheduler import GRANTED, ModelInfo, ModelState, ModelView, Scheduler, TimerKey
from .settings import Settings
from .systemd import Event, Systemd, SystemdError, UnitChanged
from .weights import check_weights

log = logging.getLogger("sparkctl.supervisor")
MEMINFO = Path("/proc/meminfo")
MEMORY_POLL = 0.1  # seconds between MemAvailable readings while a start waits for memory


def read_meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """Fields of /proc/meminfo in bytes."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


async def _last_log_line(unit: str, user: bool) -> str:
    """What a failed unit's own processes said last (their error, as often as not) — not systemd's
    lines about the unit — if the journal is readable (the daemon is in group systemd-journal)."""
    argv = ["journalctl", "--no-pager", "-o", "json", "-n", "30", "-u", unit]
    if user:
        argv.insert(1, "--user")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except (OSError, TimeoutError):
        return ""
    engine = probe = ""
    for line in out.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if entry.get("_PID") == "1" or not isinstance(message, str) or not message.strip():
            continue
        # The readiness probe only reports that the engine died; the engine says why.
        if " probe " in f" {entry.get('_CMDLINE', '')} ":
            probe = message.strip()
        else:
            engine = message.strip()
    return (engine or probe)[:300]


def model_info(model: Model) -> ModelInfo:
    spec = model.spec
    return ModelInfo(
        id=spec.id,
        fraction=spec.engine.gpu_memory_utilization,
        exclusive=spec.serve.gpu == "exclusive",
        pinned=spec.serve.pinned,
        preload=spec.serve.preload,
        idle_timeout=model.idle_timeout,
        max_concurrent=spec.serve.max_concurrent,
        start_timeout=spec.serve.start_timeout,
    )


class Lease:
    """The right to send one request to a ready model. Release it when the response has ended
    (in a `finally`); if the model goes away underneath, `aborted` is set with the error."""

    __slots__ = ("_callbacks", "_released", "_supervisor", "aborted", "error", "model", "request")

    def __init__(self, supervisor: Supervisor, request: int, model: str) -> None:
        self._supervisor = supervisor
        self._released = False
        self.request = request
        self.model = model
        self.aborted = asyncio.Event()
        self.error: SparkError | None = None
        self._callbacks: list[Callable[[], object]] = []

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._supervisor._post(_Release(self.request, self.model))

    def abort(self, error: SparkError) -> None:
        self.error = error
        self.aborted.set()
        for callback in self._callbacks:
            callback()

    def on_abort(self, callback: Callable[[], object]) -> None:
        """Call `callback` if the lease is aborted (at once, if it already was)."""
        if self.aborted.is_set():
            callback()
        else:
            self._callbacks.append(callback)


# ---------------------------------------------------------------------------------- messages
@dataclass(slots=True)
class _Acquire:
    request: int
    model: str
    wait: bool
    future: asyncio.Future[Lease]


@dataclass(slots=True)
class _Release:
    request: int
    model: str


@dataclass(slots=True)
class _Cancel:
    request: int


@dataclass(slots=True)
class _StartFinished:
    model: str
    result: str
    unit_result: str
    detail: str = ""


@dataclass(slots=True)
class _StopFinished:
    model: str


@dataclass(slots=True)
class _Timer:
    key: TimerKey


@dataclass(slots=True)
class _Memory:
    model: str
    available: int


@dataclass(slots=True)
class _Admin:
    action: str  # "start" | "stop" | "stop-now"
    model: str
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Systemd:
    event: Event


_Message = (
    _Acquire | _Release | _Cancel | _StartFinished | _StopFinished | _Timer | _Memory | _Admin | _Systemd
)


@dataclass
class Supervisor:
    catalog: Catalog
    settings: Settings
    meminfo: Path = MEMINFO
    listeners: list[Callable[[str, ModelState], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[_Message] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Acquire] = {}
        self._leases: dict[int, Lease] = {}
        self._timers: dict[TimerKey, asyncio.TimerHandle] = {}
        self._memory_watch: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._systemd: Systemd | None = None
        self._owner: asyncio.Task[None] | None = None
        self._units = {service_name(m.id): m.id for m in self.catalog.enabled}
        total = read_meminfo(self.meminfo).get("MemTotal", 0)
        sched = self.settings.scheduler
        self._scheduler = Scheduler(
            [model_info(m) for m in self.catalog.enabled],
            self,
            memory_budget=sched.memory_budget,
            drain_timeout=sched.drain_timeout,
            memory_wait=sched.memory_wait,
            queue_limit=self.settings.gateway.queue_limit,
            total_memory=total,
        )

    # ------------------------------------------------------------------------------ lifecycle
    async def start(self, *, preload: bool = False) -> None:
        """Connect to systemd, adopt what runs (restarting nothing), then serve the inbox."""
        self._systemd = await Systemd.connect(self.settings.systemd.bus, on_event=self._on_systemd)
        states = dict.fromkeys(self._units.values(), "inactive")
        for unit, active, _sub in await self._systemd.list_units(list(self._units)):
            if unit in self._units:
                states[self._units[unit]] = active
        now = self._loop.time()
        self._scheduler.adopt(states, now)
        if preload:
            self._scheduler.preload(now)
        self._owner = asyncio.create_task(self._run(), name="sparkctl-supervisor")
        running = sorted(m for m, s in states.items() if s == "active")
        log.info("supervisor ready; adopted running models: %s", ", ".join(running) or "none")

    async def close(self) -> None:
        if self._owner is not None:
            self._owner.cancel()
            await asyncio.gather(self._owner, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        for task in [*self._tasks, *self._memory_watch.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._memory_watch.values(), return_exceptions=True)
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(UpstreamError("sparkctl is shutting down."))
        if self._systemd is not None:
            await self._systemd.close()

    async def _run(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                self._handle(msg)
            except SparkError as e:
                future = getattr(msg, "future", None)
                if future is not None and not future.done():
                    future.set_exception(e)
                else:
                    log.warning("%s", e)
            except Exception:
                log.exception("supervisor: failed to handle %r", msg)

    def _post(self, msg: _Message) -> None:
        self._inbox.put_nowait(msg)

    def _handle(self, msg: _Message) -> None:
        now = self._loop.time()
        s = self._scheduler
        match msg:
            case _Acquire(request, model, wait, future):
                if future.done():  # the caller gave up before we got here
                    return
                self._waiters[request] = msg
                try:
                    granted = s.acquire(request, model, now, wait=wait) is GRANTED
                except SparkError:
                    self._waiters.pop(request, None)
                    raise
                if granted:
                    self.grant(request)
            case _Release(request, model):
                self._leases.pop(request, None)
                s.release(request, model, now)
            case _Cancel(request):
                if self._waiters.pop(request, None) is not None:
                    s.cancel(request, now)
            case _StartFinished(model, result, unit_result, detail):
                s.start_finished(model, result, unit_result, now, detail)
            case _StopFinished(model):
                s.stop_finished(model, now)
            case _Timer(key):
                self._timers.pop(key, None)
                s.timer(key, now)
            case _Memory(model, available):
                s.memory(model, available, now)
            case _Admin(action, model, future):
                if action == "start":
                    s.admin_start(model, now)
                else:
                    s.admin_stop(model, now, force=action == "stop-now")
                if not future.done():
                    future.set_result(None)
            case _Systemd(UnitChanged(unit, active, _sub)):
                if unit in self._units:
                    s.unit_state(self._units[unit], active, now)
            case _Systemd():
                pass  # JobRemoved: our own jobs report through their futures

    def _on_systemd(self, event: Event) -> None:
        self._post(_Systemd(event))

    # ------------------------------------------------------------------------------ API
    async def acquire(self, model: str, *, wait: bool = True) -> Lease:
        """A lease on `model`, once it is ready (or a SparkError saying why not)."""
        request = next(self._ids)
        future: asyncio.Future[Lease] = self._loop.create_future()
        self._post(_Acquire(request, model, wait, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().release()  # granted just as the caller went away
            else:
                self._post(_Cancel(request))
            raise

    async def start_model(self, model: str) -> None:
        await self._admin("start", model)

    async def stop_model(self, model: str, *, now: bool = False) -> None:
        await self._admin("stop-now" if now else "stop", model)

    async def stop_all(self, *, now: bool = False) -> None:
        for view in self.views():
            if view.state not in (ModelState.STOPPED, ModelState.FAILED):
                await self.stop_model(view.id, now=now)

    async def _admin(self, action: str, model: str) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        self._post(_Admin(action, model, future))
        await future

    def views(self) -> list[ModelView]:
        """A snapshot for status pages (reading is fine; deciding on it is not)."""
        return self._scheduler.views()

    def view(self, model: str) -> ModelView:
        return self._scheduler.view(model)

    @property
    def healthy(self) -> bool:
        """The owner task runs and the bus connection is up (the watchdog pings only then)."""
        return (
            self._owner is not None
            and not self._owner.done()
            and self._systemd is not None
            and self._systemd.connected
        )

    @property
    def queue_length(self) -> int:
        return self._scheduler.queue_length

    def loop_to_wall(self, t: float) -> float:
        """A loop-clock instant as seconds since the epoch (for displays)."""
        return time.time() + (t - self._loop.time())

    # ------------------------------------------------------------------------------ effects
    def start_unit(self, model: str) -> None:
        self._spawn(self._run_start(model), f"start {model}")

    def stop_unit(self, model: str) -> None:
        self._spawn(self._run_stop(model), f"stop {model}")

    async def _run_start(self, model: str) -> None:
        assert self._systemd is not None
        unit = service_name(model)
        spec = self.catalog.models[model].spec
        # Weights first (a few stat calls): a model that was never pulled fails now, saying what
        # to run, instead of downloading for minutes inside a start job.
        weights = check_weights(self.settings.runtime.hf_cache, spec.source.hf_repo, spec.source.revision)
        if not weights.present:
            log.error("%s: weights missing (%s)", model, weights.reason, extra={"model": model, "unit": unit})
            self._post(
                _StartFinished(
                    model,
                    "failed",
                    "missing-weights",
                    f"its weights are not on this host ({weights.reason}); run `sparkctl pull {model}`",
                )
            )
            return
        log.info("starting %s", unit, extra={"model": model, "unit": unit})
        detail = ""
        try:
            job = await self._systemd.start(unit)
            result = await job.wait()
            unit_result = "success"
            if result != "done":
                unit_result = (await self._systemd.status(unit)).result or result
                detail = await _last_log_line(unit, self.settings.systemd.bus == "user")
        except SystemdError as e:
            log.error("cannot start %s: %s", unit, e, extra={"model": model, "unit": unit})
            result, unit_result = "failed", e.message
        self._post(_StartFinished(model, result, unit_result, detail))

    async def _run_stop(self, model: str) -> None:
        assert self._systemd is not None
        unit = service_name(model)
        log.info("stopping %s", unit, extra={"model": model, "unit": unit})
        try:
            await (await self._systemd.stop(unit)).wait()
        except SystemdError as e:
            log.error("cannot stop %s: %s", unit, e, extra={"model": model, "unit": unit})
        self._post(_StopFinished(model))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def grant(self, request: int) -> None:
        waiter = self._waiters.pop(request, None)
        if waiter is None:
            return
        lease = Lease(self, request, waiter.model)
        if waiter.future.done():  # cancelled meanwhile: give the lease straight back
            self._post(_Release(request, waiter.model))
            return
        self._leases[request] = lease
        waiter.future.set_result(lease)

    def reject(self, request: int, error: SparkError) -> None:
        waiter = self._waiters.pop(request, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(error)

    def abort_leases(self, model: str, leases: list[int], error: SparkError) -> None:
        for request in leases:
            lease = self._leases.pop(request, None)
            if lease is not None:
                lease.abort(error)

    def set_timer(self, key: TimerKey, at: float) -> None:
        self.cancel_timer(key)
        self._timers[key] = self._loop.call_at(at, self._post, _Timer(key))

    def cancel_timer(self, key: TimerKey) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def watch_memory(self, model: str, need_bytes: int) -> None:
        self.unwatch_memory(model)
        log.info(
            "waiting for %.1f GiB of memory before starting", need_bytes / 1024**3, extra={"model": model}
        )
        self._memory_watch[model] = asyncio.create_task(self._poll_memory(model), name=f"memory {model}")

    async def _poll_memory(self, model: str) -> None:
        while True:
            available = read_meminfo(self.meminfo).get("MemAvailable", 0)
            self._post(_Memory(model, available))
            await asyncio.sleep(MEMORY_POLL)

    def unwatch_memory(self, model: str) -> None:
        task = self._memory_watch.pop(model, None)
        if task is not None:
            task.cancel()

    def state_changed(self, model: str, state: ModelState) -> None:
        log.info("%s is %s", model, state.value, extra={"model": model, "state": state.value})
        for listener in self.listeners:
            try:
                listener(model, state)
            except Exception:
                log.exception("state listener failed")

    def warn(self, message: str, model: str) -> None:
        log.warning("%s: %s", model, message, extra={"model": model})
