"""The supervisor's hands: performs what the scheduler decides (internal to core).

Systemd jobs run as child tasks that post their results back to the supervisor's inbox; timers are
`loop.call_at` handles that post too; the memory gate reads MemAvailable only while it is open.
Nothing here decides anything: every outcome goes back to the owner task as a message. File and
journal reads happen off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from sparkctl.catalog import Catalog
from sparkctl.core import messages as msg
from sparkctl.core.host import last_log_line, read_meminfo
from sparkctl.core.lease import Lease
from sparkctl.core.parts import Parts
from sparkctl.core.states import JobResult, ModelState, TimerKey
from sparkctl.core.systemd import Systemd
from sparkctl.core.weights import check_weights, snapshot_size
from sparkctl.errors import BusUnavailableError, SparkError, UpstreamError
from sparkctl.settings import Settings
from sparkctl.units.names import service_name

log = logging.getLogger("sparkctl.supervisor")
BUS_WAIT = 30.0  # seconds a start asked for while disconnected from systemd waits for it
MEMORY_POLL = 0.1  # seconds between MemAvailable readings while a start waits for memory


class SupervisorEffects:
    """The scheduler's `Effects`, performed for real. Owns the waiting requests' futures, the
    granted leases, the child tasks and the timers; the supervisor owns everything else."""

    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        *,
        post: Callable[[msg.Message], None],
        settle: Callable[[msg.Message], None],
        on_state: Callable[[str, ModelState], None],
        meminfo: Path,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._catalog = catalog
        self._settings = settings
        self._post = post
        # an ended lease's Release: applied at once where nothing waits before it (Supervisor._settle)
        self._settle = settle
        self._on_state = on_state
        self._meminfo = meminfo
        self.systemd: Systemd | None = None  # connected by the supervisor's start()
        # Set while `systemd` is connected; the supervisor clears it when the connection is lost
        # and sets it once the new one is followed (Resync).
        self.bus_ready = asyncio.Event()
        self._held_starts: dict[str, asyncio.TimerHandle] = {}  # asked for while disconnected
        self.waiters: dict[int, msg.Acquire] = {}
        self._leases: dict[int, Lease] = {}
        self._timers: dict[TimerKey, asyncio.TimerHandle] = {}
        self._memory_watch: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The starts in progress, each marked once another start overlapped it: MemAvailable's
        # drop over such a start holds the other model's memory too, and is not its footprint.
        self._loading: dict[str, bool] = {}
        # Models this node owns that span other nodes (#15), with the client of those nodes: a
        # start readies the other parts before the head's unit, a model that goes down frees
        # them. `_engaged`: the other nodes may hold parts of it (from the start of a start to
        # the release); `_keepers` renew their reservations while it serves; `_releasing` is a
        # release in flight, which the next start waits for (its DELETE must not land after the
        # new reservation).
        self.spans: dict[str, Parts] = {}
        self._engaged: set[str] = set()
        self._keepers: dict[str, asyncio.Task[None]] = {}
        self._releasing: dict[str, asyncio.Task[None]] = {}
        self._readying: dict[str, asyncio.Future[None]] = {}  # a start's other nodes, in progress

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        # The parts on other nodes are not released: a restarted daemon adopts the head and renews
        # them; a daemon that stays down lets their reservations run out.
        tasks = [*self._tasks, *self._memory_watch.values(), *self._keepers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiter in self.waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(UpstreamError("sparkctl is shutting down."))

    def lease_ended(self, request: int) -> None:
        self._leases.pop(request, None)

    # ------------------------------------------------------------------------------ systemd jobs
    def start_unit(self, model: str) -> None:
        if not self.bus_ready.is_set():
            # No connection to systemd now: the start is not sent. Its waiters wait for the
            # connection (the scheduler decides afresh once systemd's view is read again), or,
            # if it is not back within BUS_WAIT, are told.
            log.warning("start of %s waits for the connection to systemd", model, extra={"model": model})
            self._held_starts.setdefault(model, self._loop.call_later(BUS_WAIT, self._give_up_start, model))
            return
        self._spawn(self._run_start(model), f"start {model}")

    def _give_up_start(self, model: str) -> None:
        if self._held_starts.pop(model, None) is not None:
            self._post(msg.JobLost(model, f"no connection to systemd for {BUS_WAIT:.0f}s"))

    def reconnected(self) -> None:
        """The connection is back: the starts held meanwhile are the scheduler's to decide again
        (systemd's view may have changed), not to be sent as they were."""
        self.bus_ready.set()
        for handle in self._held_starts.values():
            handle.cancel()
        self._held_starts.clear()

    def stop_unit(self, model: str) -> None:
        if (readying := self._readying.get(model)) is not None:
            readying.cancel()  # a stop while the other nodes are readied: the head never starts
        self._spawn(self._run_stop(model), f"stop {model}")

    async def _run_start(self, model: str) -> None:
        assert self.systemd is not None
        unit = service_name(model)
        spec = self._catalog.models[model].spec
        # Weights first (a few stat calls, in a thread): a model that was never pulled fails now,
        # saying what to run, instead of downloading for minutes inside a start job.
        weights = await asyncio.to_thread(
            check_weights, self._settings.runtime.hf_cache, spec.source.hf_repo, spec.source.revision
        )
        if not weights.present:
            log.error("%s: weights missing (%s)", model, weights.reason, extra={"model": model, "unit": unit})
            said = f"its weights are not on this host ({weights.reason}); run `sparkctl pull {model}`"
            self._post(msg.StartFinished(model, JobResult.FAILED, "missing-weights", said))
            return
        if weights.snapshot is not None:  # (it may have been pulled since the daemon started)
            self._post(msg.Sized(model, await asyncio.to_thread(snapshot_size, weights.snapshot)))
        if (parts := self.spans.get(model)) is not None:
            try:
                readying = asyncio.ensure_future(self._ready_parts(model, parts))
                self._readying[model] = readying
                await readying
            except SparkError as e:
                log.error("%s: %s", model, e.message, extra={"model": model, "unit": unit})
                self._post(msg.StartFinished(model, JobResult.FAILED, "other-node", e.message, error=e))
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the daemon stops: this task itself is cancelled
                log.info("%s: stopped while its other nodes were readied", model, extra={"model": model})
                self._post(msg.StartFinished(model, JobResult.CANCELED, "canceled"))
                return
            finally:
                self._readying.pop(model, None)
        log.info("starting %s", unit, extra={"model": model, "unit": unit})
        detail = ""
        available = await self._available()
        self._loading = dict.fromkeys(self._loading, True) | {model: bool(self._loading)}
        try:
            job = await self.systemd.start(unit)
            result = await job.wait()
            unit_result = "success"
            if result is not JobResult.DONE:
                unit_result = (await self.systemd.status(unit)).result or result.value
                detail = await last_log_line(unit, self._settings.systemd.bus == "user")
        except BusUnavailableError as e:
            log.error("start of %s lost: %s", unit, e, extra={"model": model, "unit": unit})
            self._post(msg.JobLost(model, e.message))
            return
        except Exception as e:  # any other failure is a result too: a waiter never hangs on it
            log.error("cannot start %s: %s", unit, e, extra={"model": model, "unit": unit})
            result, unit_result = JobResult.FAILED, e.message if isinstance(e, SparkError) else repr(e)
        finally:
            overlapped = self._loading.pop(model, False)
        self._post(msg.StartFinished(model, result, unit_result, detail))
        if result is JobResult.DONE:
            await self._measure(model, unit, None if overlapped else available)

    async def _ready_parts(self, model: str, parts: Parts) -> None:
        """Before the head's unit: every other node checked, reserved (each drains and stops its
        own tenants first, as its own scheduler decides) and its worker part started."""
        if (releasing := self._releasing.get(model)) is not None:
            await asyncio.shield(releasing)
        self._engaged.add(model)
        await parts.check()
        log.info("reserving %s for %s", ", ".join(p.name for p in parts.peers), model, extra={"model": model})
        await parts.reserve(within=self._catalog.models[model].spec.serve.start_timeout)
        await parts.start_workers()
        log.info("worker parts of %s started; starting its head", model, extra={"model": model})

    def engage(self, model: str, state: ModelState) -> None:
        """A spanning model found running (adopted at start-up): its other nodes hold parts of it,
        to be renewed while it serves and freed when it goes down."""
        if model in self.spans and state not in (ModelState.STOPPED, ModelState.FAILED, ModelState.BACKOFF):
            self._engaged.add(model)
            self._follow_parts(model, state)

    def _follow_parts(self, model: str, state: ModelState) -> None:
        if model not in self._engaged:
            return
        if state is ModelState.READY and model not in self._keepers:
            task = asyncio.create_task(self._keep(model, self.spans[model]), name=f"keep {model}")
            self._keepers[model] = task
        elif state in (ModelState.STOPPED, ModelState.FAILED, ModelState.BACKOFF):
            self._engaged.discard(model)
            if (keeper := self._keepers.pop(model, None)) is not None:
                keeper.cancel()
            release = asyncio.create_task(self._release_parts(model), name=f"release {model}")
            self._releasing[model] = release
            self._tasks.add(release)
            release.add_done_callback(self._tasks.discard)

    async def _keep(self, model: str, parts: Parts) -> None:
        def wanted(node: str) -> None:
            self._post(msg.PartWanted(model, node))

        try:
            await parts.keep(wanted)
        except SparkError as e:
            self._keepers.pop(model, None)
            self._post(msg.PartLost(model, e))

    async def _release_parts(self, model: str) -> None:
        try:
            unreached = await self.spans[model].release()
            done = "freed" if not unreached else f"freed, but for {', '.join(unreached)}"
            log.info("the other nodes of %s %s", model, done, extra={"model": model})
        finally:
            if self._releasing.get(model) is asyncio.current_task():
                del self._releasing[model]

    async def _available(self) -> int | None:
        return (await asyncio.to_thread(read_meminfo, self._meminfo)).get("MemAvailable")

    async def _measure(self, model: str, unit: str, available_before: int | None) -> None:
        """What the ready model takes: the drop of MemAvailable over its start (on the Spark's
        unified memory its GPU allocations show there, not in any cgroup) or its unit's cgroup
        accounting, whichever is larger (the cgroup misses what the GPU holds). `available_before`
        is None when another start overlapped this one: the drop would hold both."""
        try:
            status = await self.systemd.status(unit) if self.systemd is not None else None
            available_after = await self._available()
        except (SparkError, OSError) as e:
            log.info("%s: its footprint could not be measured (%s)", model, e, extra={"model": model})
            return
        seen = [status.memory_current] if status is not None and status.memory_current else []
        if available_before is not None and available_after is not None:
            seen.append(available_before - available_after)
        footprint = max(seen, default=0)
        exec_to_ready = status.exec_to_active if status is not None else None
        if footprint > 0 or exec_to_ready is not None:
            self._post(msg.Measured(model, footprint if footprint > 0 else None, exec_to_ready))

    async def _run_stop(self, model: str) -> None:
        assert self.systemd is not None
        unit = service_name(model)
        log.info("stopping %s", unit, extra={"model": model, "unit": unit})
        began = time.monotonic()
        try:
            await (await self.systemd.stop(unit)).wait()
        except BusUnavailableError as e:
            # Whether it stopped is systemd's to say once connected again (resync).
            log.error("stop of %s lost: %s", unit, e, extra={"model": model, "unit": unit})
            self._post(msg.JobLost(model, e.message))
            return
        except Exception as e:  # refused (no such unit, …): nothing runs that we asked to stop
            log.error("cannot stop %s: %s", unit, e, extra={"model": model, "unit": unit})
        else:
            # The unit kills an engine still there at serve.stop_timeout (systemd's TimeoutStopSec=,
            # podman's --stop-timeout), so a stop that lasted that long ended by the kill. Told by
            # the time, not by the unit's Result: that may be an earlier failure's, and a
            # container's depends on conmon's cleanup.
            took = time.monotonic() - began
            bound = self._catalog.models[model].spec.serve.stop_timeout
            if took >= bound:
                log.warning(
                    "%s: the engine did not exit within serve.stop_timeout (%gs) of SIGTERM and was "
                    "killed; its stop took %.1fs",
                    model,
                    bound,
                    took,
                    extra={"model": model, "unit": unit},
                )
        self._post(msg.StopFinished(model))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------ requests
    def grant(self, request: int) -> None:
        waiter = self.waiters.pop(request, None)
        if waiter is None:
            return
        if waiter.future.done():  # cancelled meanwhile: give the lease straight back
            self._post(msg.Release(request, waiter.model))
            return
        lease = Lease(request, waiter.model, release=self._release)
        self._leases[request] = lease
        waiter.future.set_result(lease)

    def _release(self, lease: Lease) -> None:
        self._settle(msg.Release(lease.request, lease.model))

    def reject(self, request: int, error: SparkError) -> None:
        waiter = self.waiters.pop(request, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(error)

    def abort_leases(self, model: str, leases: list[int], error: SparkError) -> None:
        for request in leases:
            lease = self._leases.pop(request, None)
            if lease is not None:
                lease.abort(error)

    # ------------------------------------------------------------------------------ time, memory
    def set_timer(self, key: TimerKey, at: float) -> None:
        self.cancel_timer(key)
        self._timers[key] = self._loop.call_at(at, self._fire, key)

    def _fire(self, key: TimerKey) -> None:
        self._timers.pop(key, None)
        self._post(msg.Timer(key))

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
            info = await asyncio.to_thread(read_meminfo, self._meminfo)
            self._post(msg.Memory(model, info.get("MemAvailable", 0)))
            await asyncio.sleep(MEMORY_POLL)

    def unwatch_memory(self, model: str) -> None:
        task = self._memory_watch.pop(model, None)
        if task is not None:
            task.cancel()

    # ------------------------------------------------------------------------------ reporting
    def state_changed(self, model: str, state: ModelState) -> None:
        log.info("%s is %s", model, state.value, extra={"model": model, "state": state.value})
        if model in self.spans:
            self._follow_parts(model, state)
        self._on_state(model, state)

    def warn(self, message: str, model: str) -> None:
        log.warning("%s: %s", model, message, extra={"model": model})

    def reservation_settled(self, model: str, holder: str, error: SparkError | None) -> None:
        # The owner learns it by renewing (its next ask answers granted, or not held any more);
        # the journal says when and why.
        if error is None:
            log.info("this node is held for %s, by %s", model, holder, extra={"model": model})
        else:
            log.warning("%s: %s", model, error.message, extra={"model": model})
