"""Test tiers and the sandbox fixtures.

Unit tests run anywhere. Tests under tests/integration/ drive a real systemd 252 with its system
bus, Podman 5 and Quadlet, booted in namespaces by sparkctl.sandbox (one box per test session):
where the machine cannot boot it (not root, substrate not installed) they are skipped with the
reason, and under CI=true that skip is a failure. A failing integration test gets the box's
journal attached to its report; every test is checked for leaked child processes, and every
integration test for units it left running. Every test also runs under the guards of
tests/guards.py: no asyncio task outlives an async test, no blocking call runs on an event loop.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparkctl.apikeys.engine import engine_env_text
from sparkctl.sandbox import box as sandbox
from sparkctl.sandbox.box import Box
from sparkctl.sandbox.weights import write_placeholder
from sparkctl.settings import Settings
from tests.guards import _no_blocking_calls, _no_leaked_tasks, _task_guard

__all__ = ["_no_blocking_calls", "_no_leaked_tasks", "_task_guard"]  # fixtures, used by name
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INTEGRATION_DIR = Path(__file__).parent / "integration"
_skip_reason: str | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skip_reason:
        terminalreporter.write_line(f"integration tests skipped: {_skip_reason}", yellow=True, bold=True)


def _unavailable(reason: str) -> None:
    global _skip_reason
    if IN_CI:
        pytest.fail(f"integration tests cannot run under CI=true: {reason}", pytrace=False)
    _skip_reason = reason
    pytest.skip(f"needs the sandboxed systemd: {reason}")


@pytest.fixture(scope="session")
def box() -> Iterator[Box]:
    reason = sandbox.unavailable_reason()
    if reason:
        _unavailable(reason)
    b = Box.up(name=f"t{os.getpid()}")
    try:
        yield b
    finally:
        b.down()


@pytest.fixture(scope="session")
def emulator_image(box: Box) -> str:
    from sparkctl.sandbox import image

    return image.import_into(box)


def box_settings(box: Box, **sections: dict[str, Any]) -> Settings:
    """Settings that point sparkctl at the box: its bus, its unit directories, paths it can see."""
    (box.path / "hf").mkdir(exist_ok=True)
    (box.path / "compile").mkdir(exist_ok=True)
    write_placeholder(box.path / "hf", "org/model")  # the emulated models' "weights"
    engine_env = box.path / "engine.env"  # one engine key per box, as `sparkctl install` writes it
    if not engine_env.exists():
        engine_env.write_text(engine_env_text())
        engine_env.chmod(0o600)
    data: dict[str, Any] = {
        "systemd": {
            "bus": box.bus_address,
            "quadlet_dir": str(box.quadlet_dir),
            "unit_dir": str(box.unit_dir),
        },
        "runtime": {
            "container_network": "host",
            "sparkctl": str(Path(sys.prefix) / "bin" / "sparkctl"),
            "hf_cache": str(box.path / "hf"),
            "compile_cache": str(box.path / "compile"),
            "engine_env": str(engine_env),
            # The test engines run from this checkout's interpreter, which may live under /root
            # (0700): a dynamic user could not run it. test_units checks the confined default.
            "process_user": "root",
            "state_dir": str(box.path / "state"),  # what the in-process supervisors learn
        },
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings.model_validate(data)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    started = getattr(item, "_box_started", None)
    the_box = getattr(item, "funcargs", {}).get("box")
    if report.failed and started is not None and isinstance(the_box, Box) and the_box.init_pid:
        report.sections.append(("sandbox journal", the_box.journal(since=started - 1, lines=300)))
    return report


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """No test leaves a child process behind; no integration test leaves a sparkctl unit running."""
    before = _children()
    if "box" in request.fixturenames:
        request.node._box_started = time.time()
    yield
    deadline = time.monotonic() + 5
    while (leaked := _children() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"leaked child processes: {sorted(leaked)}"
    # (tests on an installed sparkctl share its units across the module; its teardown checks them)
    if "box" in request.fixturenames and "installed" not in request.fixturenames:
        the_box: Box = request.getfixturevalue("box")
        active = the_box.systemctl(
            "list-units",
            "--plain",
            "--no-legend",
            "--state=active,activating,deactivating",
            "sparkctl-*",
            check=False,
        ).stdout.split()
        units = [u for u in active if u.startswith("sparkctl-") and u.endswith((".service", ".socket"))]
        assert not units, f"left running in the sandbox: {units}"


def _children() -> set[tuple[int, str]]:
    """Live descendants of this process (pid, command), except a sandbox and what runs in it."""
    me = os.getpid()
    boxes = {int(f.read_text()) for d in sandbox.boxes() if (f := d / "launcher.pid").exists()}
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if rest[0] == "Z":
            continue
        parents[int(d.name)] = int(rest[1])
        names[int(d.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
    out = set()
    for pid in parents:
        p, hops = pid, 0
        while p in parents and p != me and p not in boxes and hops < 64:
            p, hops = parents[p], hops + 1
        if p == me and pid != me:
            out.add((pid, names[pid]))
    return out
