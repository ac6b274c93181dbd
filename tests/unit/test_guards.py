"""The guards every test runs under (tests/guards.py) bite: a blocking call on the event loop from
sparkctl's code raises, and an asyncio task left running fails the test that left it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from blockbuster import BlockingError

from sparkctl.core.host import read_meminfo

ROOT = Path(__file__).resolve().parents[2]


async def test_a_blocking_call_on_the_loop_is_caught() -> None:
    with pytest.raises(BlockingError):
        read_meminfo()  # file I/O, called from the event loop
    assert (await asyncio.to_thread(read_meminfo))["MemTotal"] > 0  # off the loop: fine


def test_blocking_calls_outside_a_loop_are_fine() -> None:
    assert read_meminfo()["MemTotal"] > 0


PLANTED = """
import asyncio

async def test_leaves_a_task_behind() -> None:
    asyncio.create_task(asyncio.sleep(3600), name="planted")

async def test_cleans_up() -> None:
    task = asyncio.create_task(asyncio.sleep(3600))
    task.cancel()
"""


def test_a_leaked_task_fails_the_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pytester.makeconftest("from tests.guards import _no_blocking_calls, _no_leaked_tasks, _task_guard\n")
    pytester.makepyfile(test_planted=PLANTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*asyncio tasks left running by the test: planted*"])
