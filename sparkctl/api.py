"""The admin API's records (BRIEF §4.5, `/api/v1/…`): built by the gateway (gateway/admin.py),
read by the operator commands' client (client.py). One definition, so the two cannot drift.

Records ignore fields they do not know: a newer daemon may say more than this client reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from sparkctl.core.states import ModelState


class Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelStatus(Record):
    """One model as the daemon sees it now. Times are seconds since the epoch."""

    id: str
    state: ModelState
    since: float
    in_flight: int
    waiting: int
    idle_stop_at: float | None
    failures: int
    backoff_until: float | None
    last_load_seconds: float | None
    # the learned typical load time (None before a start), and, while the model is on its way
    # (starting, queued, or a request waits for it), the seconds until it is likely ready
    load_time_s: float | None = None
    eta_seconds: float | None = None
    eta_guess: bool = False  # the ETA rests on a load time guessed (no start of it seen yet)
    load_time_guess_s: float | None = None  # before any start: a guess from its size on disk
    exec_load_time_s: float | None = None  # the learned typical time from the engine's exec to ready
    memory_bytes: int | None = None  # the learned footprint
    # why its last start failed or it crashed, with the engine's last log line; None once ready
    last_error: str | None = None
    # a worker part of a spanning model (#15): the node whose reservation holds this one for it
    reserved_by: str | None = None
    unit: str
    gpu_memory_utilization: float
    gpu: Literal["exclusive", "shared"]
    pinned: bool


class PreflightStatus(Record):
    """What a model lacks on a node before it can start there (#15: asked of every node a
    spanning model spans, before anything stops): each entry says what and the command to run."""

    node: str
    model: str
    ready: bool
    missing: list[str]
    # the model's catalog entry here (catalog/span.py fingerprint): every node must have the same
    catalog_sha256: str | None = None


class PullLack(Record):
    """One thing a model still lacks on a node after a pull there: `what` is `weights` or
    `image`, and the message names the command that fixes it."""

    what: str
    message: str


class PullEvent(Record):
    """One line of `POST /api/v1/models/{model}/pull` (#15), a node pulling a spanning model's
    weights on another node's request: `line` (progress, `text`), then one `done` (`missing`:
    what the model still lacks on that node, its image say) or `failed` (`message`, `hint`)."""

    event: Literal["line", "done", "failed"]
    text: str | None = None
    node: str | None = None
    model: str | None = None
    missing: list[PullLack] | None = None  # `done` only
    message: str | None = None
    hint: str | None = None


class ImageStatus(Record):
    """One image a node's enabled catalog needs, as that node sees it (`GET /api/v1/images`):
    `state` is `present`, `missing`, or `unknown` (Podman could not be asked: `note` says why)."""

    node: str
    image: str
    state: str
    models: list[str]
    note: str = ""


class ReservationStatus(Record):
    """Another node's reservation of this one for the worker part of a spanning model (#15), as
    this node answers it: held (`granted`) or waiting its turn; `lease_s` from now unless renewed."""

    model: str
    holder: str
    granted: bool
    lease_s: float
    # Held, while this node's own requests wait for it: the owner is to give the node back as a
    # local swap would (its model drained, then stopped and released).
    wanted_back: bool = False


class PeerModel(Record):
    """A model another node of the cluster serves, as that node last listed it. `state` is the
    peer's (a ModelState value), or `unavailable` while the peer does not answer."""

    id: str
    state: str
    available: bool


class PeerStatus(Record):
    """Another node of the cluster (#15), as this daemon sees it. Times are seconds since the
    epoch; `error` says why it is not available."""

    name: str
    url: str
    available: bool
    checked: float | None
    answered: float | None
    error: str | None
    models: list[PeerModel]


class DaemonStatus(Record):
    """`GET /api/v1/status`."""

    version: str
    started: float
    queue_depth: int
    memory_budget: float
    models: list[ModelStatus]
    # This node's name (cluster.node), and the other nodes of its cluster, if any (#15).
    node: str | None = None
    peers: list[PeerStatus] = []


class StateEvent(Record):
    """One `state` event of `GET /api/v1/events`; `eta_seconds` while the model is on its way."""

    model: str
    state: ModelState
    time: float
    eta_seconds: float | None = None
    eta_guess: bool = False


class EtaEvent(Record):
    """One `eta` event of `GET /api/v1/events`: a model on its way has a new estimate, because
    something before it changed (sent for every model on its way after any state change)."""

    model: str
    eta_seconds: float
    eta_guess: bool
    time: float


class ErrorDetail(Record):
    message: str
    type: str
    param: str | None = None
    code: str


class ErrorEnvelope(Record):
    """Every error the gateway answers (BRIEF §4.5)."""

    error: ErrorDetail
