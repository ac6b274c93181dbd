"""The D-Bus systemd client against the sandbox's real systemd and system bus."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sparkctl.core.systemd import Event, JobRemoved, Systemd, UnitChanged
from sparkctl.errors import BusUnavailableError, UnitNotFoundError
from sparkctl.sandbox.box import Box
from tests.conftest import box_settings
from tests.helpers import write_model
from tests.integration.conftest import SPARKCTL, emulated, refused


async def until(events: list[Event], predicate: Any, within: float = 10) -> Event:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for e in events:
            if predicate(e):
                return e
        await asyncio.sleep(0.01)
    raise AssertionError(f"no matching event in {events}")


async def test_start_and_stop_through_dbus_with_job_results_and_state_events(
    box: Box, deploy: Any, tmp_path: Path
) -> None:
    emulated(tmp_path, "dbus-a", 28180, load_time=0.3)
    deploy(tmp_path, box_settings(box))
    events: list[Event] = []
    sd = await Systemd.connect(box.bus_address, on_event=events.append)
    try:
        unit = "sparkctl-dbus-a.service"
        assert (await sd.status(unit)).active_state == "inactive"
        job = await sd.start(unit)
        assert await job.wait() == "done"
        # done means ready: the engine answers right now
        assert not refused(28180)
        status = await sd.status(unit)
        assert status.running and status.sub_state == "running" and status.main_pid > 0
        await until(
            events, lambda e: isinstance(e, UnitChanged) and e.unit == unit and e.active_state == "activating"
        )
        await until(
            events, lambda e: isinstance(e, UnitChanged) and e.unit == unit and e.active_state == "active"
        )
        assert any(isinstance(e, JobRemoved) and e.unit == unit and e.result == "done" for e in events)
        assert ("sparkctl-dbus-a.service", "active", "running") in await sd.list_units(["sparkctl-*"])
        assert await (await sd.stop(unit)).wait() == "done"
        await until(
            events, lambda e: isinstance(e, UnitChanged) and e.unit == unit and e.active_state == "inactive"
        )
        assert refused(28180)
    finally:
        await sd.close()


async def test_failures_are_reported_with_the_units_result(box: Box, deploy: Any, tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "dbus-fails",
        engine={
            "runtime": "process",
            "image": None,
            "port": 28181,
            "ulimits": {},
            "kind": "openai",
            "command": [SPARKCTL, "emulate", "m", "--port", "not-a-port"],
        },
    )
    # a load slower than the start timeout
    emulated(tmp_path, "dbus-slow", 28182, load_time=30, serve={"start_timeout": "1s"})
    deploy(tmp_path, box_settings(box))
    sd = await Systemd.connect(box.bus_address)
    try:
        t0 = time.monotonic()
        failed = await (await sd.start("sparkctl-dbus-fails.service")).wait()
        status = await sd.status("sparkctl-dbus-fails.service")
        assert failed == "failed" and status.active_state == "failed" and status.result == "exit-code"
        assert status.exec_main_status == 2  # the emulator's usage error
        assert time.monotonic() - t0 < 10  # noticed when the engine died, not at a timeout
        # A start that outlives TimeoutStartSec= (here in the readiness probe) ends the job as
        # "failed"; the unit's Result says why.
        assert await (await sd.start("sparkctl-dbus-slow.service")).wait() == "failed"
        assert (await sd.status("sparkctl-dbus-slow.service")).result == "timeout"
        with pytest.raises(UnitNotFoundError):
            await sd.start("sparkctl-no-such-model.service")
        assert (await sd.status("sparkctl-no-such-model.service")).load_state == "not-found"
    finally:
        await sd.close()


async def test_changes_made_by_someone_else_arrive_as_events(box: Box, deploy: Any, tmp_path: Path) -> None:
    emulated(tmp_path, "dbus-manual", 28183, load_time=0)
    deploy(tmp_path, box_settings(box))
    events: list[Event] = []
    sd = await Systemd.connect(box.bus_address, on_event=events.append)
    try:
        unit = "sparkctl-dbus-manual.service"
        await asyncio.to_thread(box.systemctl, "start", unit)
        await until(
            events, lambda e: isinstance(e, UnitChanged) and e.unit == unit and e.active_state == "active"
        )
        await until(events, lambda e: isinstance(e, JobRemoved) and e.unit == unit and e.result == "done")
        await asyncio.to_thread(box.systemctl, "kill", "--signal=KILL", unit)
        await until(
            events, lambda e: isinstance(e, UnitChanged) and e.unit == unit and e.active_state == "failed"
        )
    finally:
        await sd.close()


async def test_an_unreachable_bus_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BusUnavailableError, match="cannot connect"):
        await Systemd.connect(f"unix:path={tmp_path}/nothing-here")
