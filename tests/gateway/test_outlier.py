"""Outlier detection (passive health) and health that tells the truth: the `Outlier`
state machine on a fake clock, then real traffic through a gateway."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kairos_core import (
    Backend,
    BackendList,
    CircuitBreakerConfig,
    HealthStatus,
    OutlierDetectionConfig,
    ReadyStatus,
)
from kairos_gateway.backends import BackendRegistry, BackendSettings, BackendState
from kairos_gateway.metrics import GatewayMetrics

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.gateway.test_ops import sample
from tests.support import ResettingServer, api_call, eventually, raw_request, route, unused_port

# -- the state machine, on a fake clock -------------------------------------------------


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def registry_with(
    clock: Clock, config: OutlierDetectionConfig, *routes: int
) -> tuple[BackendRegistry, list[list[BackendState]]]:
    """States for routes of the given sizes (distinct backends), activated."""
    registry = BackendRegistry(GatewayMetrics(), clock=clock)
    groups: list[list[BackendState]] = []
    n = 0
    for size in routes:
        members = []
        for _ in range(size):
            n += 1
            members.append(registry.state(Backend(host=f"http://b{n}", port=80), BREAKER, config))
        groups.append(members)
    activate(registry, config, groups)
    return registry, groups


def activate(
    registry: BackendRegistry, config: OutlierDetectionConfig, groups: list[list[BackendState]]
) -> None:
    shaped = [(tuple(g), config.max_ejected(len(g))) for g in groups]
    registry.configure(
        BackendSettings(s, BREAKER, config, tuple(x for x in shaped if s in x[0]))
        for s in {s.endpoint: s for g in groups for s in g}.values()
    )


BREAKER = CircuitBreakerConfig(failure_threshold=1000)
OD = OutlierDetectionConfig(
    consecutive_failures=3, base_ejection_s=10, max_ejection_s=35, max_ejection_percent=50
)


def fail(state: BackendState, times: int, kind: str = "connect") -> None:
    for _ in range(times):
        state.outlier.failure(kind)


def test_consecutive_failures_eject_and_an_answer_resets_the_streak() -> None:
    clock = Clock()
    _, [[a, b, _]] = registry_with(clock, OD, 3)
    fail(a, 2)
    a.outlier.success()
    fail(a, 2)
    assert a.available()
    fail(a, 1)
    assert not a.available()
    assert a.down()
    assert (a.outlier.reason, a.outlier.remaining_s(), a.stats.ejections) == ("connect", 10, 1)
    assert b.available()


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # seconds after each ejection started before the next failure streak
        ([10], [10, 20]),  # fails on probation: twice as long
        ([10, 20], [10, 20, 35]),  # capped at max_ejection_s
        ([10 + 10], [10, 10]),  # a clean probation: back to the base time
        ([10, 20 + 20], [10, 20, 10]),
    ],
)
def test_ejections_double_on_probation_and_reset_after_it(
    schedule: list[float], expected: list[float]
) -> None:
    clock = Clock()
    _, [[a, _, _]] = registry_with(clock, OD, 3)
    fail(a, 3)
    durations = [a.outlier.until - a.outlier.since]
    for gap in schedule:
        clock.now += gap
        assert a.available()
        probation = a.outlier.on_probation()
        # On probation a single failure is enough; after it, a whole streak is needed.
        fail(a, 1 if probation else 3)
        assert not a.available()
        assert a.outlier.reason == ("probation" if probation else "connect")
        durations.append(a.outlier.until - a.outlier.since)
    assert durations == expected


def test_five_xx_counts_only_when_switched_on() -> None:
    clock = Clock()
    _, [[off, _]] = registry_with(clock, OD, 2)
    for _ in range(10):
        off.outlier.server_error()
    assert off.available()
    on_config = OD.model_copy(update={"count_5xx": True, "consecutive_5xx": 4})
    _, [[on, _]] = registry_with(clock, on_config, 2)
    for _ in range(3):
        on.outlier.server_error()
    fail(on, 1)  # a try without an answer extends the 5xx streak too
    assert not on.available()
    assert on.outlier.reason == "connect"


@pytest.mark.parametrize(
    ("size", "percent", "most"),
    [(1, 10, 0), (2, 10, 1), (3, 10, 1), (10, 10, 1), (20, 10, 2), (3, 100, 2), (4, 0, 1)],
)
def test_max_ejected_is_a_share_but_at_least_one_and_never_all(
    size: int, percent: int, most: int
) -> None:
    config = OD.model_copy(update={"max_ejection_percent": percent})
    assert config.max_ejected(size) == most
    clock = Clock()
    _, [members] = registry_with(clock, config, size)
    for state in members:
        fail(state, 3)
    assert sum(not s.available() for s in members) == most


def test_a_shared_backend_is_ejected_only_within_every_routes_limit() -> None:
    clock = Clock()
    config = OD.model_copy(update={"max_ejection_percent": 10})
    registry = BackendRegistry(GatewayMetrics(), clock=clock)
    shared, a, b, c = (
        registry.state(Backend(host=f"http://{n}", port=80), BREAKER, config)
        for n in ("shared", "a", "b", "c")
    )
    activate(registry, config, [[a, shared], [shared, b, c]])
    fail(a, 3)  # route one: one of two may go
    assert not a.available()
    fail(shared, 3)  # route one is at its limit: the shared backend stays
    assert shared.available()
    clock.now += 10  # a returns
    fail(shared, 1)
    assert not shared.available()


def test_turning_detection_off_ends_an_ejection_and_settings_wait_for_activation() -> None:
    clock = Clock()
    registry, [[a, b]] = registry_with(clock, OD, 2)
    fail(a, 3)
    off = OD.model_copy(update={"enabled": False})
    # Registering the backend for a snapshot being prepared changes nothing live.
    again = registry.state(Backend(host="http://b1", port=80), BREAKER, off)
    assert again is a
    assert a.outlier.config is OD
    assert not a.available()
    activate(registry, off, [[a, b]])
    assert a.available()
    fail(b, 10)
    assert b.available()


# -- real traffic ---------------------------------------------------------------------

FAST = {"consecutive_failures": 3, "base_ejection_s": 0.3, "max_ejection_s": 5}


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    # Breakers that never open unless a test asks, so ejection is seen on its own.
    top.setdefault("circuit_breaker", {"failure_threshold": 1000})
    return {"version": 1, "routers": list(routes), **top}


@pytest.fixture
async def dead() -> AsyncIterator[ResettingServer]:
    server = await ResettingServer().start()
    yield server
    await server.stop()


async def backends_list(gw: RunningGateway) -> BackendList:
    return BackendList.model_validate((await api_call(gw.port, "GET", "/api/backends")).json())


async def metrics_text(gw: RunningGateway) -> str:
    return (await raw_request(gw.port, "/metrics")).body.decode()


async def test_real_failures_eject_a_backend_until_it_returns_on_probation(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    gw = await gateway_factory(
        cfg(route("/x", "/x", [a, b, dead]), outlier_detection=FAST)  # 10 %: one may go
    )
    statuses = [(await raw_request(gw.port, "/x")).status for _ in range(9)]
    assert statuses.count(502) == 3
    assert dead.accepted == 3
    # Ejected: the next requests all go to a and b.
    assert [(await raw_request(gw.port, "/x")).status for _ in range(6)] == [200] * 6
    assert dead.accepted == 3

    listing = await backends_list(gw)
    item = next(i for i in listing.backends if i.address == dead.url)
    assert item.ejection is not None
    assert (item.available, item.ejection.ejected, item.ejection.reason) == (False, True, "reset")
    assert item.ejection.count == 1
    assert 0 < item.ejection.remaining_s <= 0.3
    assert item.ejection.since is not None
    assert item.ejection.until is not None
    assert item.ejection.since < item.ejection.until
    assert listing.routes_down == []
    text = await metrics_text(gw)
    assert sample(text, "kairos_backend_ejections_total", backend=dead.url) == 1
    assert sample(text, "kairos_backend_ejected", backend=dead.url) == 1
    assert sample(text, "kairos_backend_ejected", backend=a.url) == 0

    # Back after the base time, on probation: one failure ejects it for twice as long.
    async def tried_again() -> bool:
        await raw_request(gw.port, "/x")
        return dead.accepted > 3

    await eventually(tried_again)
    state = gw.gateway.runtime.snapshot.routes[0].backends[2]
    await eventually(lambda: state.outlier.ejected())
    assert state.outlier.reason == "probation"
    assert state.outlier.until - state.outlier.since == pytest.approx(0.6)
    assert state.stats.ejections == 2


async def test_a_shared_fault_ejects_only_the_allowed_share(
    gateway_factory: GatewayFactory,
) -> None:
    servers = [await ResettingServer().start() for _ in range(3)]
    try:
        gw = await gateway_factory(cfg(route("/x", "/x", servers), outlier_detection=FAST))
        for _ in range(30):
            assert (await raw_request(gw.port, "/x")).status == 502
        states = gw.gateway.runtime.snapshot.routes[0].backends
        assert [s.outlier.ejected() for s in states].count(True) == 1
        assert (await raw_request(gw.port, "/health")).json()["status"] == "healthy"
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.parametrize("count_5xx", [True, False])
async def test_5xx_answers_eject_only_when_counted(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, count_5xx: bool
) -> None:
    broken, good = await backend_factory("broken"), await backend_factory("good")
    broken.status = 500
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [broken, good]),
            outlier_detection={**FAST, "count_5xx": count_5xx, "consecutive_5xx": 3},
        )
    )
    for _ in range(10):
        await raw_request(gw.port, "/x")
    listing = await backends_list(gw)
    item = next(i for i in listing.backends if i.address == broken.url)
    assert item.ejection is not None
    assert item.ejection.ejected is count_5xx
    assert item.ejection.reason == ("5xx" if count_5xx else None)
    assert len(broken.requests) == (3 if count_5xx else 5)


async def test_health_is_degraded_with_the_routes_down_while_ready_stays_ready(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    good = await backend_factory("good")
    gw = await gateway_factory(
        cfg(
            route("/up", "/up", [good]),
            route(
                "/down",
                "/down",
                [dead],
                circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 30},
            ),
        )
    )
    health = HealthStatus.model_validate((await raw_request(gw.port, "/health")).json())
    assert (health.status, health.routes_down) == ("healthy", [])
    assert (await raw_request(gw.port, "/down")).status == 502
    assert (await raw_request(gw.port, "/down")).status == 503

    response = await raw_request(gw.port, "/health")
    health = HealthStatus.model_validate(response.json())
    assert response.status == 200
    assert (health.status, health.routes_down) == ("degraded", ["/down"])
    ready = await raw_request(gw.port, "/ready")
    assert ready.status == 200
    assert ReadyStatus.model_validate(ready.json()).ready
    assert (await backends_list(gw)).routes_down == ["/down"]
    assert (await raw_request(gw.port, "/up")).status == 200


async def test_an_idle_open_breaker_is_probed_by_a_tcp_connect(
    backend_factory: BackendFactory,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kairos.gateway")
    port = unused_port()
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [f"http://127.0.0.1:{port}"]),
            circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 0.2},
        )
    )
    assert (await raw_request(gw.port, "/x")).status == 502  # nothing listens yet
    breaker = gw.gateway.runtime.snapshot.routes[0].backends[0].breaker
    assert breaker.state == "open"

    # Still nothing there: probes fail and the breaker opens again, no request needed.
    def reopened() -> bool:
        changes = [getattr(r, "fields", {}) for r in caplog.records]
        return {"old": "half_open", "new": "open"}.items() <= _merged(changes)

    await eventually(reopened)
    revived = await backend_factory("revived", port=port)
    await eventually(lambda: breaker.state == "closed")
    assert not revived.requests  # a connect, not a request
    assert (await raw_request(gw.port, "/health")).json()["status"] == "healthy"


async def test_an_idle_open_breaker_is_probed_by_the_active_health_check(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    flaky = await backend_factory("flaky")
    flaky.status = 500
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [flaky], backend_extra={"health_check_path": "/health"}),
            circuit_breaker={
                "failure_threshold": 1,
                "reset_timeout_s": 0.2,
                "failure_status_codes": [500],
            },
            health_check={"interval_s": 0.05, "timeout_s": 0.05},
        )
    )
    assert (await raw_request(gw.port, "/x")).status == 500
    breaker = gw.gateway.runtime.snapshot.routes[0].backends[0].breaker
    assert breaker.state == "open"
    probes = flaky.probes
    await eventually(lambda: breaker.state == "closed")
    assert flaky.probes > probes
    assert len(flaky.requests) == 1


def _merged(changes: list[dict[str, Any]]) -> Any:
    """The (old, new) items of any one breaker change, as a set of pairs per record."""
    for fields in changes:
        if fields.get("old") == "half_open" and fields.get("new") == "open":
            return fields.items()
    return set()
