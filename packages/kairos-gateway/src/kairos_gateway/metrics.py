"""Prometheus metrics for the data path.

The hot path records into plain Python counters (one event loop, so no locks) and a
custom collector turns them into Prometheus families only when `/metrics` is scraped.
prometheus-client's own metric objects take a lock per update and cost several
microseconds per request; this way a request costs a few dict lookups and integer
additions.

Label cardinality is bounded by construction: `route` is a route template (or one of
the fixed labels below), never a raw path; `method` is folded to the standard set.

Every request family also carries `traffic`, fixed by the `route` label (so it adds no
series): ``routed`` for requests a route served (405s on its path included), ``admin``
for the gateway's own endpoints (the management API and `/health`, `/ready`, `/live`,
`/metrics`), ``unmatched`` for requests no route served. The UI's figures and a PromQL
sum over the routes both select ``traffic="routed"``.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from kairos_core import RESERVED_PATHS
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._version import __version__


class MetricsSharing(Protocol):
    """Publishes this process's figures and merges the other workers' (`MetricsShare`)."""

    def publish(self, view: MetricsView) -> None: ...
    def merged(self, own: MetricsView) -> MetricsView: ...


#: `route` label for requests that matched no route (404, 405, bad path).
UNMATCHED = "unmatched"
#: `route` label for management API calls (`/api/...`).
MANAGEMENT = "management"

#: `traffic` of requests a route served.
ROUTED = "routed"
#: `traffic` of the gateway's own endpoints: the management API and the ops endpoints
#: (whose `route` label is their path).
ADMIN = "admin"


def traffic_of(label: str) -> str:
    """The `traffic` class of a `route` label: `ROUTED`, `ADMIN` or `UNMATCHED`.
    Routes may not claim the gateway's paths, so a label says which it is."""
    if label == UNMATCHED:
        return UNMATCHED
    if label == MANAGEMENT or label in RESERVED_PATHS:
        return ADMIN
    return ROUTED


STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)

# Upper bounds in seconds; a gateway adds well under a millisecond, so the low end is
# finer than Prometheus' defaults.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def cumulative_buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket ``counts`` (one more than ``bounds``, the last for +Inf) as the
    cumulative ``(le, count)`` pairs Prometheus exports."""
    out: list[tuple[str, int]] = []
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append((repr(bound), running))
    out.append(("+Inf", running + counts[-1]))
    return out


class Histogram:
    """Cumulative-on-export histogram: `observe` is one bisect and two additions."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        return cumulative_buckets(DURATION_BUCKETS, self.counts)


class RouteStats:
    """Everything recorded for one route label; handed to the request path once."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "duration",
        "label",
        "rate_limited",
        "requests",
        "retries",
        "traffic",
    )

    def __init__(self, label: str) -> None:
        self.label = label
        self.traffic = traffic_of(label)
        self.requests: dict[tuple[str, int], int] = {}
        self.duration = Histogram()
        self.bytes_in = 0
        self.bytes_out = 0
        self.retries: dict[str, int] = {}
        self.rate_limited = 0

    def retry(self, reason: str) -> None:
        """Count a retry (``reason``: the upstream error kind or ``status_<code>``), or a
        retry the budget refused (``budget_exhausted``)."""
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def record(
        self, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        key = (method if method in STANDARD_METHODS else "OTHER", status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration.observe(seconds)
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out


#: Upper bounds in seconds for how long WebSocket connections stay open.
SESSION_BUCKETS: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


class WebSocketStats:
    """Proxied WebSockets of one route: open now, upgrade answers, lifetimes, bytes."""

    __slots__ = (
        "bytes_down",
        "bytes_up",
        "closed",
        "durations",
        "durations_sum",
        "label",
        "open",
        "upgrades",
    )

    def __init__(self, label: str) -> None:
        self.label = label
        self.open = 0
        #: Answers to upgrade requests by status (101: upgraded).
        self.upgrades: dict[int, int] = {}
        #: Closed connections by what closed them (client, backend, idle, lifetime,
        #: shutdown, error).
        self.closed: dict[str, int] = {}
        self.durations = [0] * (len(SESSION_BUCKETS) + 1)
        self.durations_sum = 0.0
        #: Bytes relayed client -> backend (up) and backend -> client (down).
        self.bytes_up = 0
        self.bytes_down = 0

    def answered(self, status: int) -> None:
        self.upgrades[status] = self.upgrades.get(status, 0) + 1

    def opened(self) -> None:
        self.open += 1
        self.answered(101)

    def ended(self, by: str, seconds: float, bytes_up: int, bytes_down: int) -> None:
        self.open -= 1
        self.closed[by] = self.closed.get(by, 0) + 1
        self.durations[bisect_left(SESSION_BUCKETS, seconds)] += 1
        self.durations_sum += seconds
        self.bytes_up += bytes_up
        self.bytes_down += bytes_down

    def duration_buckets(self) -> list[tuple[str, int]]:
        return cumulative_buckets(SESSION_BUCKETS, self.durations)


class BackendStats:
    """Upstream timings, errors and ejections for one backend address."""

    __slots__ = ("duration", "ejections", "errors", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self.duration = Histogram()
        self.errors: dict[str, int] = {}
        #: Times outlier detection ejected the backend.
        self.ejections = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(slots=True)
class MetricsView:
    """Everything the exposition needs, from this process or merged over workers."""

    routes: list[RouteStats]
    backends: list[BackendStats]
    active_requests: int
    #: (address, up, breaker state value, in-flight) per backend.
    backend_gauges: list[tuple[str, int, int, int]]
    rate_limit_store_errors: int
    #: (address, open, idle, pending, opened total, saturated total, queue seconds
    #: total) per backend: the upstream pool's connections and queue.
    pool_gauges: list[PoolGauge] = field(default_factory=list)
    #: (address, 1 while ejected by outlier detection) per backend.
    ejected_gauges: list[tuple[str, int]] = field(default_factory=list)
    #: Proxied WebSockets per route (this process's only: not merged over workers).
    websockets: list[WebSocketStats] = field(default_factory=list)


#: See `MetricsView.pool_gauges`.
PoolGauge = tuple[str, int, int, int, int, int, float]


class GatewayMetrics(Collector):
    """The gateway's metrics registry and the collector that exports it.

    With several worker processes, ``share`` (see `metrics_share`) publishes this
    process's figures and merges the others', so every worker reports the whole gateway.
    """

    def __init__(self) -> None:
        self.share: MetricsSharing | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self._routes: dict[str, RouteStats] = {}
        self._backends: dict[str, BackendStats] = {}
        self._websockets: dict[str, WebSocketStats] = {}
        self.active_requests = 0
        #: Live per-backend gauges, read at scrape time: (address, up, breaker state
        #: value, in-flight). The gateway points this at its backend registry.
        self.backend_gauges: Callable[[], Iterable[tuple[str, int, int, int]]] = tuple
        #: Rate-limit checks answered by the fallback because Redis failed.
        self.rate_limit_store_errors: Callable[[], int] = lambda: 0
        #: The upstream pool's connections and queue per backend, read at scrape time.
        self.pool_gauges: Callable[[], Iterable[PoolGauge]] = tuple
        #: (address, ejected now) per backend, read at scrape time (the backend
        #: registry points this at itself).
        self.ejected_gauges: Callable[[], Iterable[tuple[str, int]]] = tuple
        self.registry.register(self)

    def route(self, label: str) -> RouteStats:
        stats = self._routes.get(label)
        if stats is None:
            stats = self._routes[label] = RouteStats(label)
        return stats

    def websocket(self, label: str) -> WebSocketStats:
        stats = self._websockets.get(label)
        if stats is None:
            stats = self._websockets[label] = WebSocketStats(label)
        return stats

    def backend(self, label: str) -> BackendStats:
        stats = self._backends.get(label)
        if stats is None:
            stats = self._backends[label] = BackendStats(label)
        return stats

    def own_view(self) -> MetricsView:
        """This process's figures."""
        return MetricsView(
            routes=list(self._routes.values()),
            backends=list(self._backends.values()),
            active_requests=self.active_requests,
            backend_gauges=list(self.backend_gauges()),
            rate_limit_store_errors=self.rate_limit_store_errors(),
            pool_gauges=list(self.pool_gauges()),
            ejected_gauges=list(self.ejected_gauges()),
            websockets=list(self._websockets.values()),
        )

    def view(self) -> MetricsView:
        """The whole gateway's figures: this process's, merged with the other workers'."""
        own = self.own_view()
        return own if self.share is None else self.share.merged(own)

    def routes(self) -> list[RouteStats]:
        """Every route label recorded since start (removed routes included)."""
        return self.view().routes

    def backends(self) -> list[BackendStats]:
        """Every backend label recorded since start (removed backends included)."""
        return self.view().backends

    def render(self) -> bytes:
        """The Prometheus text exposition of everything recorded."""
        return generate_latest(self.registry)

    # -- Collector -------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        view = self.view()
        routes = view.routes
        backends = view.backends

        build = GaugeMetricFamily(
            "kairos_build_info", "Kairos build information", labels=["version", "python"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

        active = GaugeMetricFamily("kairos_active_requests", "Requests being processed now")
        active.add_metric([], view.active_requests)
        yield active

        requests = CounterMetricFamily(
            "kairos_requests",
            "Requests answered, by route template, method and status; traffic is routed, "
            "admin (the gateway's own endpoints) or unmatched",
            labels=["route", "method", "status", "traffic"],
        )
        for r in routes:
            for (method, status), count in r.requests.items():
                requests.add_metric([r.label, method, str(status), r.traffic], count)
        yield requests

        duration = HistogramMetricFamily(
            "kairos_request_duration_seconds",
            "Time from request headers received to response finished, by route template",
            labels=["route", "traffic"],
        )
        for r in routes:
            duration.add_metric([r.label, r.traffic], r.duration.buckets(), r.duration.sum)
        yield duration

        bytes_in = CounterMetricFamily(
            "kairos_request_bytes", "Request body bytes received", labels=["route", "traffic"]
        )
        bytes_out = CounterMetricFamily(
            "kairos_response_bytes", "Response body bytes sent", labels=["route", "traffic"]
        )
        for r in routes:
            bytes_in.add_metric([r.label, r.traffic], r.bytes_in)
            bytes_out.add_metric([r.label, r.traffic], r.bytes_out)
        yield bytes_in
        yield bytes_out

        upstream = HistogramMetricFamily(
            "kairos_upstream_request_duration_seconds",
            "Time from sending the request upstream to its response headers, by backend",
            labels=["backend"],
        )
        errors = CounterMetricFamily(
            "kairos_upstream_errors",
            "Upstream failures by backend and kind (connect, tls, timeout, protocol, reset)",
            labels=["backend", "kind"],
        )
        ejections = CounterMetricFamily(
            "kairos_backend_ejections",
            "Times outlier detection ejected the backend",
            labels=["backend"],
        )
        for b in backends:
            upstream.add_metric([b.label], b.duration.buckets(), b.duration.sum)
            for kind, count in b.errors.items():
                errors.add_metric([b.label, kind], count)
            ejections.add_metric([b.label], b.ejections)
        yield upstream
        yield errors
        yield ejections

        retries = CounterMetricFamily(
            "kairos_retries",
            "Upstream retries by route and reason (error kind, status_<code>, or "
            "budget_exhausted for retries the retry budget refused)",
            labels=["route", "reason"],
        )
        for r in routes:
            for reason, count in r.retries.items():
                retries.add_metric([r.label, reason], count)
        yield retries

        limited = CounterMetricFamily(
            "kairos_rate_limited", "Requests refused by a rate limit (429)", labels=["route"]
        )
        for r in routes:
            if r.rate_limited:
                limited.add_metric([r.label], r.rate_limited)
        yield limited
        store_errors = CounterMetricFamily(
            "kairos_rate_limit_store_errors",
            "Rate-limit checks decided by on_redis_error because Redis failed or timed out",
        )
        store_errors.add_metric([], view.rate_limit_store_errors)
        yield store_errors

        up = GaugeMetricFamily(
            "kairos_backend_up",
            "1 when active health checks pass (or none are set)",
            labels=["backend"],
        )
        breaker = GaugeMetricFamily(
            "kairos_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            labels=["backend"],
        )
        inflight = GaugeMetricFamily(
            "kairos_backend_inflight", "Requests in flight to the backend", labels=["backend"]
        )
        for address, is_up, state, count in view.backend_gauges:
            up.add_metric([address], is_up)
            breaker.add_metric([address], state)
            inflight.add_metric([address], count)
        yield up
        yield breaker
        yield inflight
        ejected = GaugeMetricFamily(
            "kairos_backend_ejected",
            "1 while outlier detection keeps the backend out of rotation",
            labels=["backend"],
        )
        for address, is_ejected in view.ejected_gauges:
            ejected.add_metric([address], is_ejected)
        yield ejected
        yield from _pool_families(view.pool_gauges)
        yield from _websocket_families(view.websockets or list(self._websockets.values()))


def _websocket_families(stats: list[WebSocketStats]) -> Iterator[Metric]:
    open_ = GaugeMetricFamily(
        "kairos_websocket_connections", "WebSocket connections open now", labels=["route"]
    )
    upgrades = CounterMetricFamily(
        "kairos_websocket_upgrades",
        "Answers to WebSocket upgrade requests by status (101: upgraded)",
        labels=["route", "status"],
    )
    closed = CounterMetricFamily(
        "kairos_websocket_closed",
        "WebSocket connections closed, by what closed them (client, backend, idle, "
        "lifetime, shutdown, error)",
        labels=["route", "by"],
    )
    duration = HistogramMetricFamily(
        "kairos_websocket_duration_seconds",
        "How long WebSocket connections stayed open",
        labels=["route"],
    )
    relayed = CounterMetricFamily(
        "kairos_websocket_bytes",
        "Bytes relayed over WebSockets: direction up (client to backend) or down",
        labels=["route", "direction"],
    )
    for w in stats:
        open_.add_metric([w.label], w.open)
        for status, count in w.upgrades.items():
            upgrades.add_metric([w.label, str(status)], count)
        for by, count in w.closed.items():
            closed.add_metric([w.label, by], count)
        duration.add_metric([w.label], w.duration_buckets(), w.durations_sum)
        relayed.add_metric([w.label, "up"], w.bytes_up)
        relayed.add_metric([w.label, "down"], w.bytes_down)
    yield open_
    yield upgrades
    yield closed
    yield duration
    yield relayed


def _pool_families(gauges: list[PoolGauge]) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "kairos_upstream_connections",
        "Upstream connections per backend: open (busy + idle) and idle",
        labels=["backend", "state"],
    )
    pending = GaugeMetricFamily(
        "kairos_upstream_pending",
        "Requests waiting for a connection to the backend (connection_limits)",
        labels=["backend"],
    )
    opened = CounterMetricFamily(
        "kairos_upstream_connections_opened",
        "Upstream connections opened to the backend",
        labels=["backend"],
    )
    saturated = CounterMetricFamily(
        "kairos_upstream_saturated",
        "Requests refused a connection to the backend (queue full or waited too long)",
        labels=["backend"],
    )
    queued = CounterMetricFamily(
        "kairos_upstream_queue_seconds",
        "Seconds requests spent waiting for a connection to the backend",
        labels=["backend"],
    )
    for address, open_, idle, waiting, opened_total, saturated_total, queue_s in gauges:
        connections.add_metric([address, "open"], open_)
        connections.add_metric([address, "idle"], idle)
        pending.add_metric([address], waiting)
        opened.add_metric([address], opened_total)
        saturated.add_metric([address], saturated_total)
        queued.add_metric([address], queue_s)
    yield connections
    yield pending
    yield opened
    yield saturated
    yield queued
