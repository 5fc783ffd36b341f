"""The gateway's own endpoints, metrics, backends and the OpenAPI document via the client."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from kairos_client import BadRequest, NotFound
from kairos_core import BackendStatus

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route


async def test_health_ready_live(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        health = await client.health()
        assert health.status == "healthy"
        assert health.config_version == 1
        assert health.routes == 0
        ready = await client.ready()
        assert ready.ready
        assert ready.backends.total == 0
        assert (await client.live()).status == "alive"


async def test_not_ready_is_a_value_not_an_error(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    gw.gateway.ready = False  # what a starting gateway reports (503)
    async with client_for(gw) as client:
        ready = await client.ready()
    gw.gateway.ready = True
    assert not ready.ready
    assert ready.status == "not_ready"
    assert ready.reason == "starting"
    assert ready.backends.total == 1


async def test_metrics_history_and_backends(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/a", "/a", [backend])]}, metrics_interval_s=0.05
    )
    for _ in range(3):
        assert (await raw_request(gw.port, "/a")).status == 200
    async with client_for(gw) as client:
        snapshot = await client.metrics()
        assert snapshot.totals.requests == 3
        assert [r.route for r in snapshot.routes] == ["/a"]
        assert snapshot.backends[0].address == backend.url

        history = await client.metrics_history("1m", "10s")
        assert history.range_s == 60
        assert history.step_s == 10
        same = await client.metrics_history(timedelta(minutes=1), 10)
        assert (same.range_s, same.step_s) == (60, 10)

        [status] = (await client.backends()).backends
        assert isinstance(status, BackendStatus)
        assert status.address == backend.url
        assert status.routes == ["/a"]
        assert status.available
        assert status.circuit_breaker.state == "closed"

        document = await client.openapi()
        assert document["openapi"].startswith("3.1")
        assert "/api/routes" in document["paths"]


async def test_metrics_history_of_one_route_or_backend(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/users/{id}", "/u/{id}", [backend])]},
        metrics_interval_s=0.02,
        metrics_history_step_s=0.05,
        metrics_retention_s=30,
    )
    for n in range(3):
        assert (await raw_request(gw.port, f"/users/{n}")).status == 200
    sampler = gw.gateway.management.sampler
    target = sampler.label_steps_taken + 1
    async with asyncio.timeout(10):
        while sampler.label_steps_taken < target:
            await sampler.wait_for(sampler.samples_taken + 1)
    async with client_for(gw) as client:
        history = await client.metrics_history("1h", "1.2s", route="/users/{id}")
        assert (history.kind, history.label) == ("route", "/users/{id}")
        assert history.step_s == pytest.approx(1.2)  # a multiple of the 0.3 s label step
        assert sum(p.requests for p in history.points) == 3
        assert history.points[-1].latency_ms.p95 is not None
        served = await client.metrics_history(timedelta(hours=1), 0.3, backend=backend.url)
        assert (served.kind, served.label) == ("backend", backend.url)
        assert sum(p.requests for p in served.points) == 3
        assert all(p.upstream_errors == 0 for p in served.points)
        totals = await client.metrics_history("1m", "10s")
        assert (totals.kind, totals.label) == ("total", None)
        with pytest.raises(NotFound):
            await client.metrics_history(route="/nope")
        with pytest.raises(BadRequest):
            await client.metrics_history(route="/users/{id}", backend=backend.url)
