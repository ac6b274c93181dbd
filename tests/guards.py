"""Guards every test runs under (imported by tests/conftest.py, and by tests/unit/test_guards.py to
show that they bite):

- no asyncio task may outlive the async test that started it: the loop pytest-asyncio closes
  after each test would otherwise cancel it silently, hiding a task nobody owns (STYLE §8);
- no blocking call may run on an event loop from the code that runs on one in production — the
  core, the gateway, the daemon, the key file watcher, the emulator, and the admin client
  (`ON_THE_LOOP`): blockbuster patches file I/O, `time.sleep`, blocking sockets and the like
  while a test runs, and raises `BlockingError` when one is called from a running loop with a
  frame of those packages on the stack, however deep the call (a catalog read made by the
  gateway is caught). The synchronous libraries the tests call themselves to set up (catalog,
  units, sandbox) are not scanned: a test blocking its own loop while it prepares is no defect.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest
from blockbuster import blockbuster_ctx

# A task that was cancelled needs a few turns of the loop to finish: how long to let it.
SETTLE = 1.0
ON_THE_LOOP = [
    "sparkctl.core",
    "sparkctl.gateway",
    "sparkctl.daemon",
    "sparkctl.apikeys.live",
    "sparkctl.emulator",
    "sparkctl.client",
]


@pytest.fixture
async def _task_guard() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = await _outliving(before)
    if leaked:
        names = sorted(t.get_name() + f" ({t.get_coro()!r})" for t in leaked)
        for task in leaked:  # the next test gets a clean loop either way
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"asyncio tasks left running by the test: {', '.join(names)}", pytrace=False)


async def _outliving(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE
    me = asyncio.current_task()
    while True:
        leaked = {t for t in asyncio.all_tasks() - before if t is not me and not t.done()}
        if not leaked or loop.time() >= deadline:
            return leaked
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """Async tests get `_task_guard`, set up before their own fixtures, so it is torn down after
    them (they may close what they opened) and before the test's loop closes."""
    if inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_task_guard")


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[None]:
    with blockbuster_ctx(ON_THE_LOOP):
        yield
