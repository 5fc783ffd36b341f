"""`/api/metrics` and `/api/metrics/history`: what the UI charts."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route

FAST = {"metrics_interval_s": 0.02, "metrics_history_step_s": 0.05, "metrics_retention_s": 0.5}


async def test_snapshot_counts_rates_and_percentiles(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]}, **FAST)
    for _ in range(8):
        assert (await raw_request(gw.port, "/a")).status == 200
    assert (await raw_request(gw.port, "/missing")).status == 404
    backend.status = 500
    assert (await raw_request(gw.port, "/a")).status == 500
    body = (await raw_request(gw.port, "/api/metrics")).json()
    totals = body["totals"]
    assert totals["requests"] == 10  # this call is recorded once answered
    assert totals["client_errors"] == 1
    assert totals["server_errors"] == 1
    assert totals["success_rate"] == pytest.approx(0.8)
    assert body["requests_per_second"]["last_10s"] > 0
    assert body["requests_per_second"]["last_1m"] > 0
    latency = body["latency_ms_1m"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert body["active_requests"] == 1  # the metrics call itself
    [route_a] = [r for r in body["routes"] if r["route"] == "/a"]
    assert route_a["requests"] == 9
    assert route_a["server_errors"] == 1
    [b] = body["backends"]
    assert b["address"].endswith(f":{backend.port}")
    assert b["responses"] == 9
    assert b["healthy"] is True


async def test_history_ring_and_resampling(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]}, **FAST)
    sampler = gw.gateway.management.sampler
    assert sampler.history.maxlen == 10  # retention / step: bounded by construction
    for _ in range(5):
        await raw_request(gw.port, "/a")
    async with asyncio.timeout(10):
        await sampler.wait_for(sampler.samples_taken + 15)
    resp = await raw_request(gw.port, "/api/metrics/history?range=1m&step=0.05s")
    assert resp.status == 200
    body = resp.json()
    assert body["step_s"] == pytest.approx(0.05)
    points = body["points"]
    assert len(points) >= 3
    assert sum(p["requests"] for p in points) >= 5
    coarse = (await raw_request(gw.port, "/api/metrics/history?range=1h&step=0.2s")).json()
    assert coarse["step_s"] == pytest.approx(0.2)
    assert sum(p["requests"] for p in coarse["points"]) == sum(p["requests"] for p in points)
    async with asyncio.timeout(10):
        await sampler.wait_for(sampler.samples_taken + 40)
    assert len(sampler.history) == 10
    default = (await raw_request(gw.port, "/api/metrics/history")).json()
    assert default["range_s"] == 3600


@pytest.mark.parametrize("query", ["range=forever", "range=2d", "step=-1s", "step=0"])
async def test_history_rejects_bad_durations(gateway_factory: GatewayFactory, query: str) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, f"/api/metrics/history?{query}")
    assert resp.status == 400
    assert resp.header("Content-Type") == "application/problem+json"
