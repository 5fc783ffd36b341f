"""Circuit-breaker, active health-check and outlier-detection settings.

Each is set once at the top level (the defaults) and may be overridden per route.
A route's block **replaces** the top-level block as a whole: fields the route leaves
out take the model defaults below, not the top-level values. (Merging field by field
would need a second, all-optional copy of each model, as `RouteTimeouts` is; a block
of four or five related numbers is clearer read as one unit.)

Per-backend state is keyed by backend address, so when two routes share a backend
with different settings, the gateway decides which route's settings the shared state
uses; see the gateway's `backends` module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from ._model import KairosModel

if TYPE_CHECKING:
    from .route import Router

__all__ = [
    "CircuitBreakerConfig",
    "ConnectionLimits",
    "HealthCheckConfig",
    "OutlierDetectionConfig",
    "effective_circuit_breaker",
    "effective_health_check",
    "effective_outlier_detection",
]


class CircuitBreakerConfig(KairosModel):
    """One breaker per backend: closed -> open -> half-open -> closed.

    ``failure_threshold`` consecutive failures open it; after ``reset_timeout_s`` it
    admits up to ``half_open_max_calls`` concurrent probes; ``success_threshold``
    consecutive probe successes close it and any probe failure re-opens it.
    Connect errors and timeouts always count as failures; upstream responses count
    only when their status is listed in ``failure_status_codes`` (default: none, so a
    backend answering 500 is "up" as far as the breaker is concerned).
    """

    failure_threshold: Annotated[int, Field(ge=1)] = 5
    reset_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    half_open_max_calls: Annotated[int, Field(ge=1)] = 1
    success_threshold: Annotated[int, Field(ge=1)] = 1
    failure_status_codes: list[Annotated[int, Field(ge=500, le=599)]] = Field(default_factory=list)


class ConnectionLimits(KairosModel):
    """Per backend: how many upstream connections it gets and how many requests may
    wait for one (Envoy's per-cluster ``max_connections`` / ``max_pending_requests``).

    ``max_connections`` bounds open connections, busy and idle together; a request that
    finds them all busy waits in a FIFO queue of at most ``max_pending`` requests for
    at most ``pending_timeout_ms``. Past either bound the request fails over to another
    backend of the route when it may be retried, else it gets 503 ``backend_saturated``
    with ``Retry-After``. Idle connections are kept up to ``max_connections`` (closed
    after the pool's idle timeout), so a busy backend's connections are reused, not
    opened and closed per request.
    """

    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024
    max_pending: Annotated[int, Field(ge=0, le=100_000)] = 1024
    pending_timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 1000


class HealthCheckConfig(KairosModel):
    """Active probes of ``GET <health_check_path>`` for backends that set a path.

    A probe passes when it answers within ``timeout_s`` with a status in
    ``expected_status_min..expected_status_max`` (inclusive; default 200-399).
    ``unhealthy_threshold`` consecutive failed probes take a healthy backend out of
    rotation; ``healthy_threshold`` consecutive passes bring it back.
    ``timeout_s`` must not exceed ``interval_s``, so at most one probe per backend is
    ever outstanding.
    """

    interval_s: Annotated[float, Field(ge=0.05, le=3600)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    healthy_threshold: Annotated[int, Field(ge=1)] = 2
    unhealthy_threshold: Annotated[int, Field(ge=1)] = 3
    expected_status_min: Annotated[int, Field(ge=100, le=599)] = 200
    expected_status_max: Annotated[int, Field(ge=100, le=599)] = 399

    @model_validator(mode="after")
    def _ordering(self) -> HealthCheckConfig:
        if self.timeout_s > self.interval_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s:g}) must not exceed interval_s ({self.interval_s:g})"
            )
        if self.expected_status_min > self.expected_status_max:
            raise ValueError(
                f"expected_status_min ({self.expected_status_min}) must not exceed "
                f"expected_status_max ({self.expected_status_max})"
            )
        return self

    def status_ok(self, status: int) -> bool:
        """Does a probe answered with ``status`` pass?"""
        return self.expected_status_min <= status <= self.expected_status_max


class OutlierDetectionConfig(KairosModel):
    """Passive health: real requests eject a backend that keeps failing them (Envoy's
    outlier detection).

    ``consecutive_failures`` tries in a row that got no response (connect refused or
    unreachable, TLS failure, timeout, reset, broken response) eject the backend.
    With ``count_5xx`` on, so do ``consecutive_5xx`` answers in a row with a 5xx status
    (a try that got no response counts toward this streak too). It is off by default,
    unlike Envoy: the breaker does not count statuses by default either, and a 5xx
    often says more about the request or a dependency all replicas share than about
    the replica. Any answer below 500 ends both streaks.

    An ejection lasts ``base_ejection_s`` doubled for each ejection in a row, at most
    ``max_ejection_s``. The backend then returns on probation for as long as it was
    out: one failure during probation ejects it again, for twice as long; a probation
    passed without one makes the next ejection start from ``base_ejection_s`` again.

    At most ``max_ejection_percent`` of a route's backends are ejected at once, but at
    least one, and never the last one in rotation: a route with a single backend never
    ejects it (its breaker and active checks still apply).
    """

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    count_5xx: bool = False
    consecutive_5xx: Annotated[int, Field(ge=1, le=1000)] = 5
    base_ejection_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_ejection_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = 10

    @model_validator(mode="after")
    def _ordering(self) -> OutlierDetectionConfig:
        if self.base_ejection_s > self.max_ejection_s:
            raise ValueError(
                f"base_ejection_s ({self.base_ejection_s:g}) must not exceed "
                f"max_ejection_s ({self.max_ejection_s:g})"
            )
        return self

    def ejection_s(self, times: int) -> float:
        """How long the ``times``-th ejection in a row lasts (1: the first)."""
        # Capped before the power can grow large: 2**times overflows floats past ~1000.
        doublings = min(max(0, times - 1), 64)
        return min(self.max_ejection_s, self.base_ejection_s * (1 << doublings))

    def max_ejected(self, backends: int) -> int:
        """How many of a route's ``backends`` may be ejected at the same time."""
        return min(backends - 1, max(1, backends * self.max_ejection_percent // 100))


def effective_circuit_breaker(
    route: Router, defaults: CircuitBreakerConfig
) -> CircuitBreakerConfig:
    """The breaker settings for ``route``'s backends: its own block, else ``defaults``."""
    return defaults if route.circuit_breaker is None else route.circuit_breaker


def effective_health_check(route: Router, defaults: HealthCheckConfig) -> HealthCheckConfig:
    """The health-check settings for ``route``'s backends: its own block, else ``defaults``."""
    return defaults if route.health_check is None else route.health_check


def effective_outlier_detection(
    route: Router, defaults: OutlierDetectionConfig
) -> OutlierDetectionConfig:
    """The outlier-detection settings for ``route``: its own block, else ``defaults``."""
    return defaults if route.outlier_detection is None else route.outlier_detection
