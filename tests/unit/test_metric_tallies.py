"""The per-request metrics are tallied by hand (#18) and must read exactly as prometheus-client's
own Counter and Histogram would have: the same names, labels, buckets (a value on a bound counts
in that bucket), counts and sums."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sparkctl.gateway.metrics import LATENCY_BUCKETS, _Tallies

seconds = st.one_of(
    st.sampled_from(LATENCY_BUCKETS),  # exactly on a bound
    st.floats(min_value=0, max_value=2000, allow_nan=False, allow_infinity=False),
)


def _samples(registry: CollectorRegistry) -> set[str]:
    """The exposition's sample lines, less prometheus-client's `_created` gauges."""
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if not line.startswith("#") and "_created" not in line}


@given(
    st.lists(
        st.tuples(st.sampled_from(["m1", "m2"]), st.sampled_from([200, 404, 503]), seconds), max_size=40
    ),
    st.lists(st.tuples(st.sampled_from(["m1", "m2"]), seconds), max_size=10),
    st.lists(st.tuples(st.sampled_from(["prompt", "completion"]), st.integers(1, 10_000)), max_size=5),
)
def test_tallies_read_as_prometheus_clients_own_metrics(
    answered: list[tuple[str, int, float]], waits: list[tuple[str, float]], tokens: list[tuple[str, int]]
) -> None:
    ours = _Tallies()
    mine = CollectorRegistry()
    mine.register(ours)
    theirs = CollectorRegistry()
    requests = Counter(
        "sparkctl_requests", "Requests answered", ["model", "route", "status"], registry=theirs
    )
    duration = Histogram(
        "sparkctl_request_duration_seconds",
        "From arrival to the end of the response",
        ["model", "route"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    wait = Histogram(
        "sparkctl_request_wait_seconds",
        "Time a request waited for its model to be ready",
        ["model"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    counted = Counter(
        "sparkctl_tokens", "Tokens the engines reported in usage", ["model", "kind"], registry=theirs
    )
    route = "/v1/chat/completions"
    for model, status, took in answered:
        key = (model, route, str(status))
        ours.requests[key] = ours.requests.get(key, 0) + 1
        ours.observe(ours.duration, (model, route), took)
        requests.labels(model, route, str(status)).inc()
        duration.labels(model, route).observe(took)
    for model, took in waits:
        ours.observe(ours.wait, model, took)
        wait.labels(model).observe(took)
    for kind, value in tokens:
        ours.tokens[("m1", kind)] = ours.tokens.get(("m1", kind), 0) + value
        counted.labels("m1", kind).inc(value)
    assert _samples(mine) == _samples(theirs)
