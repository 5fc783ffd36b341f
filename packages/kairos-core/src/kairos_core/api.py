"""Bodies of the management API's responses, as pydantic models.

The gateway builds its answers through these models and describes the API with them
(`GET /api/openapi.json`); the client SDK (kairos-client) parses the same answers back
into them, so server, document and client cannot drift apart. Request bodies are the
config models themselves (`Router`, `GatewayConfig`, `JwtConfig`, ...).

Pure data: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from .cluster import ClusterStatus
from .config import GatewayConfig
from .route import Router

__all__ = [
    "AuditChange",
    "AuditEntry",
    "AuditPage",
    "BackendCircuitBreaker",
    "BackendConnections",
    "BackendEjection",
    "BackendHealthCheck",
    "BackendList",
    "BackendMetrics",
    "BackendStatus",
    "BackendSummary",
    "ConfigBody",
    "ConfigStatus",
    "ConfigVersion",
    "ConfigVersions",
    "FieldErrorBody",
    "HealthStatus",
    "HistoryPoint",
    "Latency",
    "LiveStatus",
    "MetricsHistory",
    "MetricsSnapshot",
    "PluginCatalog",
    "PluginInfo",
    "Problem",
    "Rates",
    "ReadyStatus",
    "ReloadStatus",
    "RollbackResult",
    "RouteList",
    "RouteMetrics",
    "Totals",
    "TrafficSummary",
    "ValidationResult",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldErrorBody(_Body):
    """One validation failure: where (``routers[0].backends[1].port``), what, and the
    offending value when there is one to show."""

    path: str
    message: str
    value: Any = None


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    request_id: str
    errors: list[FieldErrorBody] | None = None
    allow: list[str] | None = None


class RouteList(_Body):
    config_version: int
    routes: list[Router]
    #: Each route's id, in the same order (its name, else its derived id): what
    #: ``/api/routes/{id}`` takes. Empty from gateways that predate route ids.
    ids: list[str] = Field(default_factory=list)


class ValidationResult(_Body):
    valid: bool
    errors: list[FieldErrorBody]


class ReloadStatus(_Body):
    #: "sibling": another worker process changed the file; "cluster": a newer version
    #: was read from the cluster's Redis.
    trigger: Literal["api", "watcher", "sighup", "sibling", "cluster"]
    ok: bool
    at: str
    error: str | None = None
    errors: list[FieldErrorBody] = []


class ConfigStatus(_Body):
    config_version: int
    etag: str
    loaded_at: str
    #: The config file, or null when the gateway runs without one (changes not saved).
    source_path: str | None = None
    #: SHA-256 of the file content the running config matches.
    file_sha256: str | None = None
    #: The file differs from what the running config was loaded from or saved as.
    file_changed_on_disk: bool
    persisted: bool
    hot_reload: bool
    watcher_running: bool
    last_reload: ReloadStatus | None = None
    routes: int
    #: The link to the cluster's Redis (null when the gateway runs on its own).
    cluster: ClusterStatus | None = None


class Latency(_Body):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Totals(_Body):
    requests: int
    success: int
    client_errors: int
    server_errors: int
    success_rate: float | None = None


class Rates(_Body):
    last_10s: float
    last_1m: float


class RouteMetrics(_Body):
    route: str
    requests: int
    client_errors: int
    server_errors: int
    success_rate: float | None = None
    requests_per_second_1m: float
    latency_ms_1m: Latency


class BackendMetrics(_Body):
    address: str
    in_use: bool
    healthy: bool | None = None
    circuit_breaker: str | None = None
    inflight: int
    responses: int
    errors: int
    latency_ms_1m: Latency


class TrafficSummary(_Body):
    """Requests kept out of the routed figures: the gateway's own (``admin``) or those
    no route served (``unmatched``)."""

    requests: int
    client_errors: int
    server_errors: int
    requests_per_second: Rates


class MetricsSnapshot(_Body):
    """The live figures. ``totals``, the rates, the success rate, the latency and
    ``routes`` count routed requests only (a 405 on a route's path is that route's);
    the gateway's own endpoints (management API, ``/health``, ``/ready``, ``/live``,
    ``/metrics``) are ``admin``, and requests no route served (404, bad path, ...) are
    ``unmatched``. Both are null from a gateway that predates them."""

    timestamp: str
    uptime_s: float
    config_version: int
    active_requests: int
    totals: Totals
    requests_per_second: Rates
    success_rate_1m: float | None = None
    latency_ms_1m: Latency
    routes: list[RouteMetrics]
    backends: list[BackendMetrics]
    admin: TrafficSummary | None = None
    unmatched: TrafficSummary | None = None


class HistoryPoint(_Body):
    """One step of `MetricsHistory`: what happened during it.

    For a backend (``kind="backend"``) the status of its responses is not recorded per
    backend: ``requests`` counts attempts, ``client_errors`` is 0, and ``server_errors``
    and ``upstream_errors`` both count attempts that got no response (connect failure,
    timeout, reset), which the gateway answers 502/504.
    """

    timestamp: str
    requests: int
    requests_per_second: float
    client_errors: int
    server_errors: int
    success_rate: float | None = None
    #: Share of the step's requests answered 4xx or 5xx (null: no requests).
    error_rate: float | None = None
    #: Share answered 5xx (null: no requests).
    server_error_rate: float | None = None
    latency_ms: Latency
    #: Requests in progress at the end of the step (gateway totals only; else null).
    active_requests: int | None = None
    #: Backends only: attempts that got no response from the backend.
    upstream_errors: int | None = None


class MetricsHistory(_Body):
    """A time series; the totals (``kind="total"``) count routed requests only, like
    `MetricsSnapshot`."""

    range_s: float
    step_s: float
    #: ``total``: the whole gateway; ``route``: one route label; ``backend``: one address.
    kind: Literal["total", "route", "backend"] = "total"
    #: The route label or backend address (null for the totals).
    label: str | None = None
    points: list[HistoryPoint]


class BackendHealthCheck(_Body):
    #: The probed path, or null when the backend has no active health check.
    path: str | None = None
    last_check: str | None = None
    last_error: str | None = None
    consecutive_ok: int
    consecutive_fail: int


class BackendCircuitBreaker(_Body):
    state: Literal["closed", "open", "half_open"]
    #: Seconds until an open breaker lets probes through again (0 unless open).
    retry_after_s: float


class BackendConnections(_Body):
    """Upstream connections of one backend: now, its limits, and totals since start."""

    open: int
    idle: int
    busy: int
    #: Requests waiting for a connection now.
    pending: int
    max_connections: int
    max_pending: int
    #: Connections opened since start.
    opened_total: int
    #: Requests refused for want of a connection (queue full or waited too long).
    saturated_total: int


#: Why a backend was ejected: the kind of the failure that completed the streak
#: (``connect`` refused or unreachable, ``tls``, ``timeout``, ``reset``, ``protocol``:
#: an invalid response, ``error``: anything else, ``5xx``: a 5xx answer), or
#: ``probation``: it failed again soon after it came back.
EjectionReason = Literal[
    "connect", "tls", "timeout", "reset", "protocol", "error", "5xx", "probation"
]


#: Each `EjectionReason` in words, for people (the CLI and the UI show these).
EJECTION_REASON_TEXT: dict[str, str] = {
    "connect": "connections refused or unreachable",
    "tls": "TLS handshakes failing",
    "timeout": "requests timing out",
    "reset": "connections closed before an answer",
    "protocol": "invalid HTTP responses",
    "error": "requests failing",
    "5xx": "answering 5xx",
    "probation": "failed again right after coming back",
}


class BackendEjection(_Body):
    """Outlier detection for one backend: ejected now, or how its last ejection went."""

    ejected: bool
    #: The last ejection's cause (null: never ejected).
    reason: EjectionReason | None = None
    #: When the last ejection began and ends (UTC, ISO 8601; null: never ejected).
    since: str | None = None
    until: str | None = None
    #: Seconds until an ejected backend returns (0 unless ejected).
    remaining_s: float = 0.0
    #: Back from an ejection and on probation: one more failure ejects it again.
    probation: bool = False
    #: Times ejected since the gateway started.
    count: int = 0


class BackendStatus(_Body):
    """One backend address: the routes using it, health, breaker, load, latency."""

    address: str
    routes: list[str]
    #: In rotation: healthy, not ejected, and its breaker admits requests.
    available: bool
    healthy: bool
    health_check: BackendHealthCheck
    circuit_breaker: BackendCircuitBreaker
    inflight: int
    ewma_latency_ms: float
    connections: BackendConnections | None = None
    #: Outlier detection (passive health); null from a gateway without it.
    ejection: BackendEjection | None = None


class BackendList(BaseModel):
    """Per backend: address, routes, health, breaker, in-flight, EWMA latency; and the
    routes none of whose backends is in rotation now (their requests get 503)."""

    model_config = ConfigDict(extra="allow")

    backends: list[BackendStatus]
    routes_down: list[str] = []


class PluginInfo(_Body):
    """One plugin: an installed one (``kairos.plugins`` entry point) or a built-in
    policy. Built-ins are configured by their own top-level fields, not ``plugins``."""

    name: str
    builtin: bool
    priority: int
    #: The request-path phases it acts in, in the order they run.
    phases: list[str]
    description: str = ""
    #: The distribution that provides it, and its version (installed plugins).
    package: str | None = None
    version: str | None = None
    #: JSON Schema of the entry's ``config`` (installed plugins).
    config_schema: dict[str, Any] | None = None


class AuditChange(_Body):
    """One thing a change did: a ``route`` ("GET /users/{id}") or a top-level
    ``setting`` ("rate_limit") ``added``, ``changed`` or ``removed``."""

    route: str | None = None
    setting: str | None = None
    change: Literal["added", "changed", "removed"]

    @model_serializer(mode="wrap")
    def _one_subject(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Exactly one of route / setting is set: the other is left out, not null.
        data = handler(self)
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None}
        return data


class AuditEntry(_Body):
    """`GET /api/audit` entries: a configuration that went live, who and what."""

    id: int
    at: str
    actor: str
    source: str
    trigger: str
    previous_version: str
    version: str
    changes: list[AuditChange]


class AuditPage(_Body):
    """Entries newest first; ``next`` is the ``before`` of the following page."""

    entries: list[AuditEntry]
    next: int | None = None


class ConfigVersion(_Body):
    version: str
    saved_at: str | None = None
    live: bool


class ConfigVersions(_Body):
    """`GET /api/config/versions`: the kept configurations, newest first."""

    versions: list[ConfigVersion]


class RollbackResult(_Body):
    """`POST /api/config/rollback`: the version restored, and the live one now."""

    restored: str
    version: str


class PluginCatalog(_Body):
    """`GET /api/plugins`: the policies a route can run, highest priority first;
    ``errors`` lists entry points that failed to load (name: reason)."""

    plugins: list[PluginInfo]
    errors: dict[str, str] = {}


class HealthStatus(_Body):
    """`GET /health`: the gateway process is up and serving (always 200). ``degraded``:
    some routes have no backend in rotation (``routes_down``, their templates); those
    routes answer 503 while the others serve as usual."""

    status: Literal["healthy", "degraded"]
    version: str
    uptime_s: float
    config_version: int
    routes: int
    timestamp: str
    #: The process that answered, and its index with `--workers` (None: one process).
    pid: int
    worker: int | None = None
    routes_down: list[str] = []


class BackendSummary(_Body):
    total: int
    available: int
    unhealthy: int
    circuit_open: int
    #: Ejected by outlier detection now.
    ejected: int = 0


class ReadyStatus(_Body):
    """`GET /ready`: 200 when the gateway takes traffic, 503 while starting or draining
    (same body shape, ``status`` says which)."""

    status: Literal["ready", "not_ready"]
    config_version: int | None = None
    #: Why not ready: ``starting`` or ``draining``.
    reason: str | None = None
    backends: BackendSummary
    #: The link to the cluster's Redis (null when the gateway runs on its own). A node
    #: that lost Redis stays ready: it serves the last configuration it applied.
    cluster: ClusterStatus | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"


class LiveStatus(_Body):
    """`GET /live`: the process answers at all."""

    status: Literal["alive"]


#: The config as `GET /api/config` shows it (secrets as "***"); parse it with
#: ``load_config(data, redacted=True)``.
ConfigBody = GatewayConfig
