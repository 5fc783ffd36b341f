"""Per-backend state: registry identity across reloads, peak-EWMA, health records."""

import logging
import math
from typing import Any

import pytest
from kairos_core import Backend, CircuitBreakerConfig, HealthCheckConfig
from kairos_gateway.backends import (
    DEFAULT_RTT_S,
    EWMA_DECAY_S,
    BackendRegistry,
    BackendState,
    endpoint_of,
)
from kairos_gateway.metrics import GatewayMetrics
from kairos_gateway.upstream import Endpoint

BREAKER = CircuitBreakerConfig(failure_threshold=1, reset_timeout_s=10)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def backend(host: str = "http://users", port: int = 8080, **extra: Any) -> Backend:
    return Backend(host=host, port=port, **extra)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def registry(metrics: GatewayMetrics, clock: Clock) -> BackendRegistry:
    return BackendRegistry(metrics, clock=clock)


def test_new_state(registry: BackendRegistry, metrics: GatewayMetrics) -> None:
    state = registry.state(backend(), BREAKER)
    assert state.address == "http://users:8080"
    assert state.endpoint == Endpoint("http", "users", 8080)
    assert state.stats is metrics.backend("http://users:8080")
    assert (state.inflight, state.healthy, state.breaker.state) == (0, True, "closed")
    assert state.breaker.config is BREAKER
    assert (state.health.last_check, state.health.last_error) == (None, None)
    assert state.available()
    assert list(registry) == [state]
    assert len(registry) == 1
    assert registry.get(state.endpoint) is state


def test_reload_keeps_state_and_reconfigures_breaker(registry: BackendRegistry) -> None:
    first = registry.state(backend(weight=1), BREAKER)
    first.inflight = 2
    other = CircuitBreakerConfig(failure_threshold=7)
    # A new snapshot names the same backend (weight changed: same address, same state).
    again = registry.state(backend(weight=5, health_check_path="/h"), other)
    assert again is first
    assert again.inflight == 2
    # Looking the state up changes nothing live; the settings apply on activation.
    assert again.breaker.config is BREAKER
    registry.configure([(again, other)])
    assert again.breaker.config is other


def test_tls_settings_are_part_of_the_identity(registry: BackendRegistry) -> None:
    verified = registry.state(backend("https://users", 443), BREAKER)
    unverified = registry.state(backend("https://users", 443, tls_verify=False), BREAKER)
    with_ca = registry.state(backend("https://users", 443, tls_ca_file="/ca.pem"), BREAKER)
    assert len({id(verified), id(unverified), id(with_ca)}) == 3
    assert verified.address == unverified.address == with_ca.address
    assert verified.stats is unverified.stats  # metrics stay keyed by address
    assert unverified.endpoint.tls_verify is False


def test_retain_drops_backends_that_left(registry: BackendRegistry) -> None:
    a = registry.state(backend("http://a"), BREAKER)
    b = registry.state(backend("http://b"), BREAKER)
    c = registry.state(backend("http://c"), BREAKER)
    dropped = registry.retain({a.endpoint, c.endpoint})
    assert dropped == [b]
    assert list(registry) == [a, c]
    assert registry.get(b.endpoint) is None
    # Coming back later starts afresh.
    b_again = registry.state(backend("http://b"), BREAKER)
    assert b_again is not b
    assert registry.retain([]) == [a, c, b_again]
    assert len(registry) == 0


def test_endpoint_of_ipv6() -> None:
    endpoint = endpoint_of(backend("http://[::1]", 81))
    assert (endpoint.host, endpoint.port, endpoint.label) == ("::1", 81, "http://[::1]:81")


def test_available_needs_health_and_breaker(registry: BackendRegistry, clock: Clock) -> None:
    state = registry.state(backend(), BREAKER)
    state.healthy = False
    assert not state.available()
    state.healthy = True
    permit = state.breaker.acquire()
    assert permit is not None
    permit.failure()
    assert not state.available()
    clock.now += 10
    assert state.available()


def test_breaker_changes_are_logged_once_each(
    registry: BackendRegistry, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    state = registry.state(backend(), BREAKER)
    caplog.set_level(logging.INFO, logger="kairos.gateway")
    for _ in range(3):
        permit = state.breaker.acquire()
        if permit is not None:
            permit.failure()
    clock.now += 10
    permit = state.breaker.acquire()
    assert permit is not None
    permit.success()
    got = [
        (r.levelno, r.fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "kairos.gateway"
    ]
    addr = "http://users:8080"
    assert got == [
        (logging.WARNING, {"backend": addr, "old": "closed", "new": "open"}),
        (logging.INFO, {"backend": addr, "old": "open", "new": "half_open"}),
        (logging.INFO, {"backend": addr, "old": "half_open", "new": "closed"}),
    ]


def test_hash_seed_is_stable_and_per_address(registry: BackendRegistry) -> None:
    a = registry.state(backend("http://a"), BREAKER)
    b = registry.state(backend("http://b"), BREAKER)
    # blake2b of the address: the same in every process (Python's hash() is salted).
    assert a.hash_seed == 0x97046881359D9877
    assert a.hash_seed != b.hash_seed


# -- peak EWMA -----------------------------------------------------------------------

TAU = EWMA_DECAY_S


@pytest.mark.parametrize(
    ("observations", "at", "expected"),
    [
        # (latency, time since start) pairs, then the time the estimate is read.
        ([], 0.0, DEFAULT_RTT_S),
        ([], TAU, DEFAULT_RTT_S / math.e),  # unmeasured: the default decays too
        ([(0.2, 1.0)], 1.0, 0.2),  # above the estimate: taken at once (peak)
        ([(0.2, 1.0), (0.5, 1.0)], 1.0, 0.5),
        ([(0.2, 1.0), (0.01, 1.0)], 1.0, 0.2),  # same instant: a low sample has no weight
        # A lower sample after one time constant: the decayed estimate (0.2 / e) is
        # pulled 1 - 1/e of the way toward it.
        ([(0.2, 0.0), (0.01, TAU)], TAU, 0.2 / math.e**2 + 0.01 * (1 - 1 / math.e)),
        # Long unmeasured, the estimate decayed below the new sample: the sample wins.
        ([(0.2, 0.0), (0.01, 5 * TAU)], 5 * TAU, 0.01),
        ([(0.2, 0.0)], 2 * TAU, 0.2 / math.e**2),  # unmeasured: decays toward 0
        ([(0.2, 0.0)], 1000 * TAU, 1e-6),  # floor: in-flight requests still cost
    ],
)
def test_ewma(
    registry: BackendRegistry,
    clock: Clock,
    observations: list[tuple[float, float]],
    at: float,
    expected: float,
) -> None:
    start = clock.now
    state = registry.state(backend(), BREAKER)
    for latency, when in observations:
        state.observe_latency(latency, start + when)
    assert state.ewma(start + at) == pytest.approx(expected)


def test_cost_multiplies_by_inflight_plus_one(registry: BackendRegistry, clock: Clock) -> None:
    state = registry.state(backend(), BREAKER)
    state.observe_latency(0.1, clock.now)
    assert state.cost(clock.now) == pytest.approx(0.1)
    state.inflight = 3
    assert state.cost(clock.now) == pytest.approx(0.4)


def test_decay_time_is_configurable(metrics: GatewayMetrics, clock: Clock) -> None:
    registry = BackendRegistry(metrics, clock=clock, ewma_decay_s=1.0)
    state = registry.state(backend(), BREAKER)
    state.observe_latency(0.2, clock.now)
    assert state.ewma(clock.now + 1.0) == pytest.approx(0.2 / math.e)
    with pytest.raises(ValueError, match="ewma_decay_s"):
        BackendRegistry(metrics, clock=clock, ewma_decay_s=0)


def test_clock_going_backwards_does_not_grow_the_estimate(
    registry: BackendRegistry, clock: Clock
) -> None:
    state = registry.state(backend(), BREAKER)
    state.observe_latency(0.1, clock.now)
    assert state.ewma(clock.now - 5) == pytest.approx(0.1)
    state.observe_latency(0.05, clock.now - 5)  # treated as dt = 0
    assert state.ewma(clock.now - 5) == pytest.approx(0.1)


# -- health records ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "healthy", "flips"),
    [
        # "+" a passing probe, "-" a failing one; thresholds: healthy 2, unhealthy 3.
        ("", True, []),
        ("--", True, [False, False]),
        ("---", False, [False, False, True]),
        ("----", False, [False, False, True, False]),
        ("--+--", True, [False] * 5),  # failures must be consecutive
        ("---+", False, [False, False, True, False]),
        ("---++", True, [False, False, True, False, True]),
        ("---+-++", True, [False, False, True, False, False, False, True]),
        ("+++", True, [False, False, False]),
    ],
)
def test_record_probe(
    registry: BackendRegistry, results: str, healthy: bool, flips: list[bool]
) -> None:
    check = HealthCheckConfig(healthy_threshold=2, unhealthy_threshold=3)
    state: BackendState = registry.state(backend(), BREAKER)
    seen = [
        state.record_probe(
            r == "+", at=1000.0 + i, error=None if r == "+" else "timeout", config=check
        )
        for i, r in enumerate(results)
    ]
    assert (state.healthy, seen) == (healthy, flips)
    if results:
        record = state.health
        assert record.last_check == 1000.0 + len(results) - 1
        assert record.last_error == (None if results[-1] == "+" else "timeout")
        tail = len(results) - len(results.rstrip(results[-1]))
        assert (record.consecutive_ok if results[-1] == "+" else record.consecutive_fail) == tail
