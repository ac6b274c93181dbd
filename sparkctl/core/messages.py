"""What the supervisor's owner task reads from its inbox: one message per thing that can change
model state. Everyone else posts; only the owner applies them to the scheduler (STYLE §1)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from sparkctl.core.lease import Lease
from sparkctl.core.states import ActiveState, JobResult, TimerKey


class AdminAction(StrEnum):
    START = "start"
    STOP = "stop"  # after in-flight requests end
    STOP_NOW = "stop-now"  # in-flight requests end with an error


@dataclass(slots=True)
class Acquire:
    request: int
    model: str
    wait: bool
    future: asyncio.Future[Lease]


@dataclass(slots=True)
class Release:
    request: int
    model: str


@dataclass(slots=True)
class Cancel:
    request: int


@dataclass(slots=True)
class StartFinished:
    model: str
    result: JobResult
    unit_result: str  # the service's Result (exit-code, timeout, …), or why no job ran
    detail: str = ""


@dataclass(slots=True)
class StopFinished:
    model: str


@dataclass(slots=True)
class Timer:
    key: TimerKey


@dataclass(slots=True)
class Memory:
    model: str
    available: int


@dataclass(slots=True)
class Admin:
    action: AdminAction
    model: str
    future: asyncio.Future[None]


@dataclass(slots=True)
class UnitState:
    model: str
    active: ActiveState


Message = Acquire | Release | Cancel | StartFinished | StopFinished | Timer | Memory | Admin | UnitState
