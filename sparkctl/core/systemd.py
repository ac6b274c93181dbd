"""A small asyncio client of systemd's D-Bus API (dbus-fast): start and stop units, learn how each
job ended from `JobRemoved`, and follow unit state from `PropertiesChanged` — events, not polling.

The supervisor owns one `Systemd`; signals arrive on the bus connection's reader and are handed
to the owner's callback as `JobRemoved` / `UnitChanged` values. Reloading systemd is `install`'s
business (root); the daemon never needs it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from sparkctl.core.states import ActiveState, JobResult
from sparkctl.errors import AccessDeniedError, BusUnavailableError, SystemdError, UnitNotFoundError

DEST = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"


_ERRORS: dict[str, type[SystemdError]] = {
    "org.freedesktop.systemd1.NoSuchUnit": UnitNotFoundError,
    "org.freedesktop.systemd1.LoadFailed": UnitNotFoundError,
    "org.freedesktop.DBus.Error.AccessDenied": AccessDeniedError,
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired": AccessDeniedError,
}


@dataclass(frozen=True, slots=True)
class JobRemoved:
    """A job ended."""

    job_id: int
    job: str
    unit: str
    result: JobResult


@dataclass(frozen=True, slots=True)
class UnitChanged:
    unit: str
    active_state: ActiveState
    sub_state: str


Event = JobRemoved | UnitChanged


@dataclass(frozen=True, slots=True)
class UnitStatus:
    name: str
    load_state: str
    active_state: str
    sub_state: str
    result: str  # the service's Result: success, exit-code, signal, timeout, oom-kill, …
    main_pid: int
    exec_main_status: int
    active_enter_us: int  # CLOCK_REALTIME µs; 0 if never
    memory_current: int | None = None  # the unit's cgroup memory in bytes; None if not accounted
    exec_main_start_us: int = 0  # CLOCK_REALTIME µs its main process was exec'd; 0 if never

    @property
    def exec_to_active(self) -> float | None:
        """Seconds from the main process's exec to the unit being active (its readiness, for a
        model unit), by systemd's clock; None when it has not been both."""
        if self.exec_main_start_us and self.active_enter_us > self.exec_main_start_us:
            return (self.active_enter_us - self.exec_main_start_us) / 1e6
        return None

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "reloading")


def unit_path(name: str) -> str:
    """systemd's object path for a unit (bus_label_escape: [A-Za-z0-9] kept, all else _xx)."""
    escaped = "".join(
        c if c.isascii() and (c.isalnum()) and not (i == 0 and c.isdigit()) else f"_{ord(c):02x}"
        for i, c in enumerate(name)
    )
    return UNIT_PATH_PREFIX + (escaped or "_")


def unit_name(path: str) -> str:
    label = path[len(UNIT_PATH_PREFIX) :]
    out, i = [], 0
    while i < len(label):
        pair = label[i + 1 : i + 3]
        if label[i] == "_" and len(pair) == 2 and all(c in "0123456789abcdef" for c in pair):
            out.append(chr(int(pair, 16)))
            i += 3
        else:
            out.append(label[i])
            i += 1
    return "".join(out)


def _raise(reply: Message, what: str) -> None:
    if reply.message_type == MessageType.ERROR:
        name = reply.error_name or ""
        text = reply.body[0] if reply.body else name
        raise _ERRORS.get(name, SystemdError)(f"{what}: {text} ({name})")


class Systemd:
    """One connection to a systemd manager over D-Bus."""

    def __init__(self, bus: MessageBus, on_event: Callable[[Event], None] | None = None) -> None:
        self._bus = bus
        self._on_event = on_event
        self._jobs: dict[str, asyncio.Future[JobResult]] = {}
        self._finished: dict[str, JobResult] = {}  # JobRemoved seen before its StartUnit reply
        self._closing = False
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, bus: str = "system", on_event: Callable[[Event], None] | None = None) -> Systemd:
        """`bus`: "system", "user", or a D-Bus address such as "unix:path=/run/dbus/system_bus_socket"."""
        if bus == "system":
            mb = MessageBus(bus_type=BusType.SYSTEM, bus_address=os.environ.get("DBUS_SYSTEM_BUS_ADDRESS"))
        elif bus == "user":
            mb = MessageBus(bus_type=BusType.SESSION)
        else:
            mb = MessageBus(bus_address=bus)
        try:
            await mb.connect()
        except (OSError, DBusError, ValueError) as e:
            raise BusUnavailableError(f"cannot connect to the {bus} bus: {e}") from e
        self = cls(mb, on_event)
        await self._subscribe()
        return self

    async def close(self) -> None:
        self._closing = True
        self._bus.remove_message_handler(self._on_message)
        self._bus.disconnect()
        self._fail_jobs("the connection to systemd was closed")

    @property
    def connected(self) -> bool:
        return self._bus.connected

    async def wait_lost(self) -> str:
        """Return when the connection ends, saying why; every job still pending fails with
        BusUnavailableError at that moment, so nothing waits on an answer that cannot come.
        (A `close()` of our own is not a loss: it returns "" then.)"""
        # (dbus-fast's method is untyped; its contract is in its docstring)
        wait_for_disconnect: Callable[[], Awaitable[None]] = self._bus.wait_for_disconnect
        try:
            await wait_for_disconnect()
            reason = "the bus closed the connection"
        except Exception as e:  # dbus-fast hands over whatever broke the transport
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        self._fail_jobs(f"lost the connection to systemd ({reason})")
        return "" if self._closing else reason

    def _fail_jobs(self, why: str) -> None:
        for fut in self._jobs.values():
            if not fut.done():
                fut.set_exception(BusUnavailableError(why))
        self._jobs.clear()

    # ---------------------------------------------------------------------------------- calls
    async def _call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = DEST,
    ) -> Message:
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        what = f"{member} {body[0] if body else ''}".strip()
        # On a lost connection dbus-fast would queue the call and wait forever: refuse it now.
        if not self._bus.connected:
            raise BusUnavailableError(f"{what}: not connected to systemd")
        try:
            reply = await self._bus.call(msg)
        except Exception as e:  # the transport broke under the call (dbus-fast's own error types)
            raise BusUnavailableError(f"{what}: lost the connection to systemd ({e})") from e
        if reply is None:  # the connection ended before the answer
            raise BusUnavailableError(f"{what}: lost the connection to systemd")
        _raise(reply, what)
        return reply

    async def _subscribe(self) -> None:
        rules = [
            f"type='signal',sender='{DEST}',path='{MANAGER_PATH}',interface='{MANAGER}',member='JobRemoved'",
            f"type='signal',sender='{DEST}',interface='{PROPERTIES}',member='PropertiesChanged',"
            f"path_namespace='{UNIT_PATH_PREFIX.rstrip('/')}'",
        ]
        for rule in rules:
            await self._call(
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "AddMatch",
                "s",
                [rule],
                destination="org.freedesktop.DBus",
            )
        # Without Subscribe(), systemd only emits signals while some client is subscribed.
        await self._call(MANAGER_PATH, MANAGER, "Subscribe")

    async def start(self, unit: str, mode: str = "replace") -> Job:
        """Queue a start job. Its result is "done" once the unit is active (for sparkctl's model
        units: ready); a failed start, and one that outlived TimeoutStartSec=, end "failed", and
        `status().result` says which ("exit-code", "timeout", …)."""
        return await self._job("StartUnit", unit, mode)

    async def stop(self, unit: str, mode: str = "replace") -> Job:
        return await self._job("StopUnit", unit, mode)

    async def _job(self, method: str, unit: str, mode: str) -> Job:
        reply = await self._call(MANAGER_PATH, MANAGER, method, "ss", [unit, mode])
        path: str = reply.body[0]
        fut = self._jobs.get(path)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            if path in self._finished:
                fut.set_result(self._finished.pop(path))
            else:
                self._jobs[path] = fut
        return Job(path=path, unit=unit, result=fut)

    async def status(self, unit: str) -> UnitStatus:
        """The unit's state, loading it if systemd has not (LoadState tells whether it exists)."""
        path = (await self._call(MANAGER_PATH, MANAGER, "LoadUnit", "s", [unit])).body[0]
        props = (await self._call(path, PROPERTIES, "GetAll", "s", [UNIT])).body[0]
        svc: dict[str, Any] = {}
        if unit.endswith(".service"):
            svc = (await self._call(path, PROPERTIES, "GetAll", "s", [SERVICE])).body[0]
        return UnitStatus(
            name=unit,
            load_state=props["LoadState"].value,
            active_state=props["ActiveState"].value,
            sub_state=props["SubState"].value,
            result=svc["Result"].value if "Result" in svc else "",
            main_pid=svc["MainPID"].value if "MainPID" in svc else 0,
            exec_main_status=svc["ExecMainStatus"].value if "ExecMainStatus" in svc else 0,
            active_enter_us=props["ActiveEnterTimestamp"].value,
            memory_current=_accounted(svc.get("MemoryCurrent")),
            exec_main_start_us=svc["ExecMainStartTimestamp"].value if "ExecMainStartTimestamp" in svc else 0,
        )

    async def list_units(
        self, patterns: Iterable[str], states: Iterable[str] = ()
    ) -> list[tuple[str, str, str]]:
        """(name, active_state, sub_state) of loaded units matching the glob patterns."""
        reply = await self._call(
            MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas", [list(states), list(patterns)]
        )
        return [(u[0], u[3], u[4]) for u in reply.body[0]]

    async def enable(self, unit_files: list[str]) -> None:
        """EnableUnitFiles: the units' [Install] links, as `systemctl enable` makes them."""
        await self._call(MANAGER_PATH, MANAGER, "EnableUnitFiles", "asbb", [unit_files, False, True])

    async def disable(self, unit_files: list[str]) -> None:
        await self._call(MANAGER_PATH, MANAGER, "DisableUnitFiles", "asb", [unit_files, False])

    async def reload(self) -> None:
        """Manager.Reload (daemon-reload): re-runs generators such as Quadlet. Needs root."""
        await self._call(MANAGER_PATH, MANAGER, "Reload")

    # ---------------------------------------------------------------------------------- signals
    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        if msg.member == "JobRemoved" and msg.interface == MANAGER:
            job_id, job, unit, raw = msg.body
            result = JobResult.parse(raw)
            fut = self._jobs.pop(job, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(result)
            else:
                self._finished[job] = result
                if len(self._finished) > 1024:  # jobs someone else queued: keep only recent ones
                    self._finished.pop(next(iter(self._finished)))
            self._emit(JobRemoved(job_id, job, unit, result))
        elif msg.member == "PropertiesChanged" and msg.path and msg.path.startswith(UNIT_PATH_PREFIX):
            interface, changed, _ = msg.body
            active = ActiveState.parse(changed["ActiveState"].value) if "ActiveState" in changed else None
            if interface == UNIT and active is not None:  # (a state newer than this sparkctl: ignored)
                sub = changed["SubState"].value if "SubState" in changed else ""
                self._emit(UnitChanged(unit_name(msg.path), active, sub))
        return False

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)


@dataclass(frozen=True, slots=True)
class Job:
    path: str
    unit: str
    result: asyncio.Future[JobResult]

    async def wait(self) -> JobResult:
        """How the job ended."""
        return await asyncio.shield(self.result)


def _accounted(variant: Any) -> int | None:
    """A cgroup counter: systemd says "not accounted" with the all-ones value."""
    value = variant.value if variant is not None else None
    return value if isinstance(value, int) and 0 < value < 2**64 - 1 else None
