"""A request's wait for its lease is bounded (gateway/proxy.py `acquire_within`): past the bound
it is a TimeoutError (504 model_start_timeout upstream of here); a client that goes away cancels
the supervisor's acquire, as before; a lease granted in time is returned."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from sparkctl.catalog import Model
from sparkctl.gateway.context import Gateway
from sparkctl.gateway.waiting import acquire_within


class _Supervisor:
    def __init__(self, grant: object | None) -> None:
        self.grant = grant
        self.cancelled = 0

    async def acquire(self, model: str, *, wait: bool) -> Any:
        try:
            if self.grant is None:
                await asyncio.Event().wait()  # never granted
            return self.grant
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def _gw(sup: _Supervisor) -> Gateway:
    return cast(Gateway, SimpleNamespace(supervisor=sup))


_MODEL = cast(Model, SimpleNamespace(id="m"))


async def test_a_granted_lease_comes_back() -> None:
    lease = object()
    assert await acquire_within(_gw(_Supervisor(lease)), _MODEL, True, 5.0) is lease


async def test_past_the_bound_the_wait_is_a_timeout_and_the_acquire_is_withdrawn() -> None:
    sup = _Supervisor(None)
    with pytest.raises(TimeoutError):
        await acquire_within(_gw(sup), _MODEL, True, 0.01)
    assert sup.cancelled == 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the timer's own cancellation was taken back


async def test_a_client_going_away_cancels_and_is_not_a_timeout() -> None:
    sup = _Supervisor(None)
    waiting = asyncio.create_task(acquire_within(_gw(sup), _MODEL, True, 60.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sup.cancelled == 1
