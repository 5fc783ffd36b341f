"""Response bodies of the management API, as pydantic models.

The handlers build their answers through these models and `openapi` describes the API
from them (and from the core config models for request bodies), so the document and
the responses cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from kairos_core import GatewayConfig, Router
from pydantic import BaseModel, ConfigDict


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


class ValidationResult(_Body):
    valid: bool
    errors: list[FieldErrorBody]


class ReloadStatus(_Body):
    trigger: Literal["api", "watcher", "sighup"]
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


class MetricsSnapshot(_Body):
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


class HistoryPoint(_Body):
    timestamp: str
    requests: int
    requests_per_second: float
    client_errors: int
    server_errors: int
    success_rate: float | None = None
    latency_ms: Latency
    active_requests: int


class MetricsHistory(_Body):
    range_s: float
    step_s: float
    points: list[HistoryPoint]


class BackendList(BaseModel):
    """Per backend: address, routes, health, breaker, in-flight, EWMA latency."""

    model_config = ConfigDict(extra="allow")

    backends: list[dict[str, Any]]


#: The config as `GET /api/config` shows it (secrets as "***").
ConfigBody = GatewayConfig

__all__ = [
    "BackendList",
    "ConfigBody",
    "ConfigStatus",
    "FieldErrorBody",
    "MetricsHistory",
    "MetricsSnapshot",
    "Problem",
    "ReloadStatus",
    "RouteList",
    "ValidationResult",
]
