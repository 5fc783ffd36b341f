"""The admin tools' own traffic and unmatched requests are kept apart from routed
traffic: the UI's totals, rate, success rate and latency count routed requests only."""

from __future__ import annotations

import asyncio
import json

import pytest
from kairos_core import MetricsSnapshot

from tests.conftest import GatewayFactory
from tests.gateway.test_ops import sample
from tests.support import EchoBackend, api_call, raw_request, route

FAST = {"metrics_interval_s": 0.02, "metrics_history_step_s": 0.05, "metrics_retention_s": 30.0}
OPS = ("/health", "/ready", "/live", "/metrics")


async def _snapshot(port: int) -> MetricsSnapshot:
    resp = await raw_request(port, "/api/metrics")
    assert resp.status == 200
    return MetricsSnapshot.model_validate(resp.json())


async def test_totals_count_routed_requests_only(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/a", "/a", [backend], methods=["GET"])]}, **FAST
    )
    sampler = gw.gateway.management.sampler
    for _ in range(3):
        assert (await raw_request(gw.port, "/a")).status == 200
    assert (await raw_request(gw.port, "/a", method="POST", body=b"x")).status == 405
    admin = 0
    for path in OPS:
        assert (await raw_request(gw.port, path)).status == 200
        admin += 1
    assert (await api_call(gw.port, "GET", "/api/routes")).status == 200
    assert (await api_call(gw.port, "GET", "/api/config/nothing-here")).status == 404
    admin += 2
    for _ in range(3):  # the UI polling
        await _snapshot(gw.port)
        admin += 1
    assert (await raw_request(gw.port, "/missing")).status == 404
    assert (await raw_request(gw.port, "/a/%2e%2e/b")).status == 400

    body = await _snapshot(gw.port)  # recorded once answered: not in its own figures
    totals = body.totals
    assert (totals.requests, totals.success, totals.client_errors) == (4, 3, 1)
    assert totals.server_errors == 0
    assert totals.success_rate == pytest.approx(0.75)
    assert body.success_rate_1m == pytest.approx(0.75)
    assert [r.route for r in body.routes] == ["/a"]
    assert body.routes[0].requests == 4
    assert body.routes[0].client_errors == 1  # the 405 is the route's

    assert body.admin is not None
    assert body.admin.requests == admin
    assert body.admin.client_errors == 1  # the unknown management path
    assert body.admin.requests_per_second.last_1m > 0
    assert body.unmatched is not None
    assert (body.unmatched.requests, body.unmatched.client_errors) == (2, 2)

    # The history's totals hold the routed requests too, however often it is polled.
    async with asyncio.timeout(10):
        await sampler.wait_for(sampler.samples_taken + 6)  # more than a history step
    for _ in range(2):
        history = (await raw_request(gw.port, "/api/metrics/history?range=1m&step=0.05s")).json()
    assert history["kind"] == "total"
    assert sum(p["requests"] for p in history["points"]) == 4
    assert sum(p["client_errors"] for p in history["points"]) == 1


async def test_idle_gateway_shows_no_traffic_while_polled(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]}, **FAST)
    sampler = gw.gateway.management.sampler
    for _ in range(5):
        await _snapshot(gw.port)
        assert (await raw_request(gw.port, "/health")).status == 200
        assert (await raw_request(gw.port, "/metrics")).status == 200
        async with asyncio.timeout(10):
            await sampler.wait_for(sampler.samples_taken + 1)
    body = await _snapshot(gw.port)
    assert body.totals.requests == 0
    assert body.requests_per_second.last_10s == 0
    assert body.requests_per_second.last_1m == 0
    assert body.success_rate_1m is None
    assert body.latency_ms_1m.p95 is None
    assert body.routes == []
    assert body.admin is not None
    assert body.admin.requests == 15
    assert body.admin.requests_per_second.last_10s > 0
    assert body.unmatched is not None
    assert body.unmatched.requests == 0


async def test_prometheus_labels_traffic_and_405_under_the_route(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/users/{id}", "/u/{id}", [backend], methods=["GET"]),
                route("/users/me", "/me", [backend], methods=["GET"]),
            ],
        }
    )
    assert (await raw_request(gw.port, "/users/7")).status == 200
    refused = await raw_request(gw.port, "/users/7", method="DELETE")
    assert refused.status == 405
    assert refused.header("Allow") == "GET"
    # Both routes match /users/me: the static one, which ranks first, owns the refusal.
    assert (await raw_request(gw.port, "/users/me", method="PUT", body=b"x")).status == 405
    assert (await raw_request(gw.port, "/nowhere")).status == 404
    assert (await api_call(gw.port, "GET", "/api/routes")).status == 200
    assert (await raw_request(gw.port, "/health")).status == 200
    text = (await raw_request(gw.port, "/metrics")).body.decode()

    def requests(**labels: str) -> float | None:
        return sample(text, "kairos_requests_total", **labels)

    assert requests(route="/users/{id}", method="GET", status="200", traffic="routed") == 1
    assert requests(route="/users/{id}", method="DELETE", status="405", traffic="routed") == 1
    assert requests(route="/users/me", method="PUT", status="405", traffic="routed") == 1
    assert requests(route="unmatched", status="405") is None
    assert requests(route="unmatched", status="404", traffic="unmatched") == 1
    assert requests(route="management", status="200", traffic="admin") == 1
    assert requests(route="/health", status="200", traffic="admin") == 1
    assert sample(text, "kairos_request_duration_seconds_count", route="/users/{id}") == 2
    assert (
        sample(text, "kairos_request_duration_seconds_count", route="/health", traffic="admin") == 1
    )
    assert sample(text, "kairos_response_bytes_total", route="/users/me", traffic="routed")
    # The access log names the route too.
    refusals = [e for e in map(json.loads, gw.access_lines()) if e["status"] == 405]
    assert sorted(e["route"] for e in refusals) == ["/users/me", "/users/{id}"]
