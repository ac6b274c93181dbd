"""Prometheus metrics (prometheus-client), one registry per gateway.

Counters and histograms are updated where things happen (each request, each state change);
gauges that describe the present (model state, leases, waiters, queue depth) are read from the
supervisor when scraped, so they cannot drift. The per-request ones (requests, their duration and
wait, tokens) are tallied in plain dicts and lists (`_Tallies`) and turned into metric families
when scraped: prometheus-client's own values take a lock on every update (they serve threads),
five updates a request, a tenth of the gateway's Python per request (#18); the daemon updates
them from its one event loop only.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from sparkctl.core.states import ModelState
from sparkctl.core.supervisor import Supervisor
from sparkctl.gateway.connections import ConnectionGuard
from sparkctl.gateway.peers import Peers

_USAGE = (
    ("prompt", re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')),
    ("completion", re.compile(rb'"completion_tokens"\s*:\s*(\d+)')),
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class _Live(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "sparkctl_model_state", "1 for the state each model is in", labels=["model", "state"]
        )
        leases = GaugeMetricFamily(
            "sparkctl_model_requests_in_flight", "Requests holding a lease", labels=["model"]
        )
        waiting = GaugeMetricFamily(
            "sparkctl_model_requests_waiting", "Requests waiting for the model", labels=["model"]
        )
        for view in self._sup.views():
            for s in ModelState:
                state.add_metric([view.id, s.value], 1.0 if view.state is s else 0.0)
            leases.add_metric([view.id], view.leases)
            waiting.add_metric([view.id], view.waiting)
        queue = GaugeMetricFamily("sparkctl_queue_depth", "Requests waiting, all models")
        queue.add_metric([], self._sup.queue_length)
        yield from (state, leases, waiting, queue)


class _Histogram:
    """One label set's observations: a count per bucket (the last one +Inf), and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.total = 0.0


class _Tallies(Collector):
    """The per-request counters and histograms, exposed under the names prometheus-client's
    Counter and Histogram gave them (`_total`; `_bucket`, `_count`, `_sum`)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.duration: dict[tuple[str, str], _Histogram] = {}
        self.wait: dict[str, _Histogram] = {}
        self.tokens: dict[tuple[str, str], int] = {}

    def observe(self, into: dict[Any, _Histogram], key: Any, seconds: float) -> None:
        h = into.get(key)
        if h is None:
            h = into[key] = _Histogram(len(LATENCY_BUCKETS))
        # a value on a bound counts in that bucket (le: less or equal), as prometheus-client's
        h.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h.total += seconds

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "sparkctl_requests", "Requests answered", labels=["model", "route", "status"]
        )
        for labels, count in self.requests.items():
            requests.add_metric(list(labels), count)
        duration = HistogramMetricFamily(
            "sparkctl_request_duration_seconds",
            "From arrival to the end of the response",
            labels=["model", "route"],
        )
        for labels2, h in self.duration.items():
            duration.add_metric(list(labels2), _cumulative(h), h.total)
        wait = HistogramMetricFamily(
            "sparkctl_request_wait_seconds",
            "Time a request waited for its model to be ready",
            labels=["model"],
        )
        for model, h in self.wait.items():
            wait.add_metric([model], _cumulative(h), h.total)
        tokens = CounterMetricFamily(
            "sparkctl_tokens", "Tokens the engines reported in usage", labels=["model", "kind"]
        )
        for labels2, count in self.tokens.items():
            tokens.add_metric(list(labels2), count)
        yield from (requests, duration, wait, tokens)


def _cumulative(h: _Histogram) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), h.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out


class _Connections(Collector):
    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        g = self._guard
        yield GaugeMetricFamily(
            "sparkctl_connections_open", "TCP connections open (gateway.max_connections caps them)", g.open
        )
        yield CounterMetricFamily(
            "sparkctl_connections_refused", "TCP connections refused over gateway.max_connections", g.refused
        )
        yield CounterMetricFamily(
            "sparkctl_connections_header_timeouts",
            "Connections closed with 408: no request headers within gateway.header_timeout",
            g.timed_out,
        )
        yield CounterMetricFamily(
            "sparkctl_requests_malformed", "Requests the HTTP parser refused (400 before routing)", g.rejected
        )


class _Peers(Collector):
    """Whether each peer of a cluster answers, read when scraped (#15)."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "sparkctl_peer_up", "1 while the cluster peer answers its polls", labels=["node"]
        )
        models = GaugeMetricFamily(
            "sparkctl_peer_models", "Models the cluster peer serves, as last listed", labels=["node"]
        )
        for state in self._peers:
            up.add_metric([state.peer.name], 1.0 if state.up else 0.0)
            models.add_metric([state.peer.name], len(state.models))
        yield from (up, models)


class Metrics:
    def __init__(self, supervisor: Supervisor) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._tallies = _Tallies()
        r.register(self._tallies)
        self.starts = Counter("sparkctl_model_starts", "Model starts begun", ["model"], registry=r)
        self.failures = Counter("sparkctl_model_failures", "Failed starts and crashes", ["model"], registry=r)
        self.stops = Counter("sparkctl_model_stops", "Model stops begun", ["model"], registry=r)
        self.load = Histogram(
            "sparkctl_model_load_seconds",
            "From start job to ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.swap = Histogram(
            "sparkctl_model_swap_seconds",
            "From queued behind another model to ready",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.relays = Counter(
            "sparkctl_relayed_requests",
            "Requests relayed to the cluster node that serves their model",
            ["node", "model", "status"],
            registry=r,
        )
        self.relay_duration = Histogram(
            "sparkctl_relay_duration_seconds",
            "Relayed requests, from arrival to the end of the peer's response",
            ["node"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        r.register(_Live(supervisor))
        self._sup = supervisor
        # running totals per model, read by the dashboard to show request and token rates
        # (prometheus-client's own counters keep theirs private)
        self.answered: dict[str, int] = {}
        self.generated: dict[str, int] = {}
        self._queued_at: dict[str, float] = {}
        self._previous: dict[str, ModelState] = {}
        supervisor.subscribe(self._on_state)

    def watch_connections(self, guard: ConnectionGuard) -> None:
        """Report the guard of the listening sockets (it exists once the sockets do)."""
        self.registry.register(_Connections(guard))

    def watch_peers(self, peers: Peers) -> None:
        self.registry.register(_Peers(peers))

    def relayed(self, node: str, model: str, status: int, seconds: float) -> None:
        self.relays.labels(node, model, str(status)).inc()
        self.relay_duration.labels(node).observe(seconds)

    def _on_state(self, model: str, state: ModelState) -> None:
        before = self._previous.get(model)
        self._previous[model] = state
        now = self._sup.view(model).since
        match state:
            case ModelState.QUEUED:
                self._queued_at[model] = now
            case ModelState.STARTING:
                self.starts.labels(model).inc()
            case ModelState.READY:
                view = self._sup.view(model)
                if before is ModelState.STARTING and view.last_load_seconds is not None:
                    self.load.labels(model).observe(view.last_load_seconds)
                if (queued := self._queued_at.pop(model, None)) is not None:
                    self.swap.labels(model).observe(now - queued)
            case ModelState.FAILED | ModelState.BACKOFF:
                if before in (ModelState.STARTING, ModelState.READY, ModelState.DRAINING):
                    self.failures.labels(model).inc()
            case ModelState.STOPPING:
                self.stops.labels(model).inc()
            case _:
                pass

    def observe(self, model: str, route: str, status: int, seconds: float) -> None:
        t = self._tallies
        key = (model, route, str(status))
        t.requests[key] = t.requests.get(key, 0) + 1
        t.observe(t.duration, (model, route), seconds)
        self.answered[model] = self.answered.get(model, 0) + 1

    def waited(self, model: str, seconds: float) -> None:
        t = self._tallies
        t.observe(t.wait, model, seconds)

    def usage(self, model: str, payload: bytes) -> None:
        """Count tokens from an engine's `usage` (a JSON body, or one SSE data line). Read with
        two patterns rather than a JSON parse of the whole answer, which would cost more than the
        rest of the request."""
        at = payload.rfind(b'"usage"')
        if at < 0:
            return
        tail = payload[at:]
        for kind, pattern in _USAGE:
            if (m := pattern.search(tail)) is not None and (value := int(m.group(1))) > 0:
                tokens = self._tallies.tokens
                tokens[(model, kind)] = tokens.get((model, kind), 0) + value
                if kind == "completion":
                    self.generated[model] = self.generated.get(model, 0) + value

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
