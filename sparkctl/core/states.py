"""The vocabulary of the core: what state a model is in, what systemd says about a unit and how a
job ended, what the scheduler knows of a model, and the effects it asks for.

Pure values and protocols: the scheduler (pure), the supervisor and the systemd client all speak
these, so they live apart from the D-Bus client that produces systemd's half of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from sparkctl.errors import SparkError


class ModelState(StrEnum):
    STOPPED = "stopped"
    QUEUED = "queued"  # wanted, but waiting for others to drain and stop, or for memory
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # finishing in-flight requests before a stop; new ones queue
    STOPPING = "stopping"
    FAILED = "failed"
    BACKOFF = "backoff"


class ActiveState(StrEnum):
    """A unit's ActiveState, as systemd reports it (org.freedesktop.systemd1.Unit)."""

    ACTIVE = "active"
    RELOADING = "reloading"
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    MAINTENANCE = "maintenance"
    REFRESHING = "refreshing"

    @classmethod
    def parse(cls, value: str) -> ActiveState | None:
        """The state systemd sent, or None for one this sparkctl does not know (a newer systemd)."""
        member = cls._value2member_map_.get(value)
        return member if isinstance(member, ActiveState) else None


class JobResult(StrEnum):
    """How a systemd job ended (the `result` of JobRemoved)."""

    DONE = "done"
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DEPENDENCY = "dependency"
    SKIPPED = "skipped"

    @classmethod
    def parse(cls, value: str) -> JobResult:
        """Results newer systemds add (invalid, assert, unsupported, …) all mean it did not run."""
        member = cls._value2member_map_.get(value)
        return member if isinstance(member, JobResult) else cls.FAILED


TimerKind = Literal["idle", "drain", "memory", "backoff", "reservation"]
TimerKey = tuple[TimerKind, str]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the scheduler needs to know about a catalog model."""

    id: str
    fraction: float  # gpu_memory_utilization: its share of the memory budget
    exclusive: bool = False
    pinned: bool = False
    preload: bool = False
    idle_timeout: float = 1200.0  # math.inf: never
    max_concurrent: int = 0  # 0: unlimited
    start_timeout: float = 1800.0
    # Its service, named in hints ("journalctl -u …"): units/names.py spells it, not the core.
    unit: str = field(kw_only=True)
    # This node runs a worker part of a model another node owns (#15): it starts only under that
    # node's reservation, at its word, and never for a request here. Always exclusive: while it
    # runs, or is reserved, it is this node's only tenant.
    worker: bool = False

    def __post_init__(self) -> None:
        if self.worker and not self.exclusive:
            raise ValueError(f"{self.id}: a worker part of a spanning model is exclusive")


@dataclass(frozen=True, slots=True)
class ModelView:
    """A read-only picture of one model, for status pages and /v1/models."""

    id: str
    state: ModelState
    since: float
    leases: int
    waiting: int
    idle_stop_at: float | None
    failures: int
    backoff_until: float | None
    last_load_seconds: float | None
    last_stop_seconds: float | None = None
    wanted: bool = False  # something is queued for it: a request, or a start nobody waits on
    # why the last start failed (the engine's last words included), until it is next ready
    last_error: str | None = None
    # the node whose reservation holds this node for it (a worker part), while it is held
    reserved_by: str | None = None


class Effects(Protocol):
    """What the scheduler asks of the world; the supervisor performs it, tests record it."""

    def start_unit(self, model: str) -> None: ...
    def stop_unit(self, model: str) -> None: ...
    def grant(self, request: int) -> None: ...
    def reject(self, request: int, error: SparkError) -> None: ...
    def abort_leases(self, model: str, leases: list[int], error: SparkError) -> None: ...
    def set_timer(self, key: TimerKey, at: float) -> None: ...
    def cancel_timer(self, key: TimerKey) -> None: ...
    def watch_memory(self, model: str, need_bytes: int) -> None: ...
    def unwatch_memory(self, model: str) -> None: ...
    def state_changed(self, model: str, state: ModelState) -> None: ...
    def warn(self, message: str, model: str) -> None: ...
    def reservation_settled(self, model: str, holder: str, error: SparkError | None) -> None:
        """`holder`'s reservation for `model`: granted (error None: the node is free and held),
        or ended without being granted (released, expired, refused)."""
