"""What the supervisor's owner task reads from its inbox: one message per thing that can change
model state. Everyone else posts; only the owner applies them to the scheduler (STYLE §1)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from sparkctl.core.lease import Lease
from sparkctl.core.states import ActiveState, JobResult, TimerKey
from sparkctl.core.systemd import Systemd
from sparkctl.errors import SparkError


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
    # What the waiters are told, when it is known better than the unit's result: a spanning
    # model's other node that refused, lacked something or did not answer (#15).
    error: SparkError | None = None


@dataclass(slots=True)
class PartLost:
    """A spanning model's other node no longer holds its part (it stopped answering, or its
    reservation ended): the model is to stop, its requests ending with `error` (#15)."""

    model: str
    error: SparkError


@dataclass(slots=True)
class PartWanted:
    """A node a spanning model holds has requests of its own waiting: the model is to make way
    as for a local swap (#15)."""

    model: str
    node: str


@dataclass(slots=True)
class StopFinished:
    model: str


@dataclass(slots=True)
class JobLost:
    """The answer to a job of ours cannot come: the connection to systemd broke."""

    model: str
    reason: str


@dataclass(slots=True)
class Resync:
    """Connected to systemd again: the new connection, and its view of every model unit, read
    afresh. The owner hands jobs to the connection and follows the view in one step, so no job
    reaches systemd before the view it acts on is the one systemd has."""

    systemd: Systemd
    states: dict[str, ActiveState]


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
class Reserve:
    """Another node (`holder`) reserves this one for its spanning model's worker part, for
    `lease` seconds from now (asking again renews): the future says whether it is held yet."""

    model: str
    holder: str
    lease: float
    future: asyncio.Future[bool]
    renew: bool = False  # only renew one that is held or waiting: never make a new one


@dataclass(slots=True)
class Unreserve:
    model: str
    holder: str
    future: asyncio.Future[None]


@dataclass(slots=True)
class EndAll:
    """The daemon stops: end every request, waiting or served, with `error`."""

    error: SparkError
    future: asyncio.Future[None]


@dataclass(slots=True)
class Measured:
    """A start, measured once ready: what the model takes in bytes (None if it could not be
    read), and the seconds from its engine's exec to ready by systemd's timestamps."""

    model: str
    footprint: int | None
    exec_to_ready: float | None = None


@dataclass(slots=True)
class Sized:
    """The bytes of a model's weights on disk, seen when it was started."""

    model: str
    weights: int


@dataclass(slots=True)
class EngineHung:
    model: str
    reason: str


@dataclass(slots=True)
class UnitState:
    model: str
    active: ActiveState


Message = (
    Acquire
    | Release
    | Reserve
    | Unreserve
    | Cancel
    | StartFinished
    | StopFinished
    | JobLost
    | Resync
    | Timer
    | Memory
    | Admin
    | EndAll
    | UnitState
    | EngineHung
    | PartLost
    | PartWanted
    | Measured
    | Sized
)
