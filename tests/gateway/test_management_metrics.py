"""`/api/metrics` and `/api/metrics/history`: what the UI charts."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import pytest
from kairos_gateway.management.history import MetricsSampler
from kairos_gateway.management.readings import POINT_BYTES
from kairos_gateway.metrics import GatewayMetrics

from tests.conftest import BackendFactory, GatewayFactory
from tests.support import EchoBackend, raw_request, route, unused_port

if TYPE_CHECKING:
    from kairos_gateway.runtime import Runtime

FAST = {"metrics_interval_s": 0.02, "metrics_history_step_s": 0.05, "metrics_retention_s": 0.5}
#: Per-label steps of 6 x 0.05 s, kept for 30 s (100 points).
LABELS = {**FAST, "metrics_retention_s": 30.0}


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
    # Routed requests only: the 404 is unmatched, this call admin (see test_admin_traffic).
    assert totals["requests"] == 9
    assert totals["client_errors"] == 0
    assert totals["server_errors"] == 1
    assert totals["success_rate"] == pytest.approx(8 / 9)
    assert body["unmatched"]["requests"] == body["unmatched"]["client_errors"] == 1
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


async def _label_steps(sampler: MetricsSampler, more: int) -> None:
    """Wait (bounded) until ``more`` further per-label steps have been taken."""
    target = sampler.label_steps_taken + more
    async with asyncio.timeout(10):
        while sampler.label_steps_taken < target:
            await sampler.wait_for(sampler.samples_taken + 1)


def _q(value: str) -> str:
    return quote(value, safe="")


async def test_per_route_and_per_backend_history(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    backend, other = await backend_factory(), await backend_factory("other")
    dead = f"http://127.0.0.1:{unused_port()}"
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/a", "/a", [backend]),
                route("/b/{id}", "/b/{id}", [other]),
                route("/down", "/down", [dead]),
                route("/idle", "/idle", [backend]),
            ],
        },
        **LABELS,
    )
    sampler = gw.gateway.management.sampler
    assert sampler.label_step_s == pytest.approx(0.3)  # 6 history steps
    assert sampler.label_capacity == 100
    for _ in range(3):
        assert (await raw_request(gw.port, "/a")).status == 200
    backend.status = 500
    assert (await raw_request(gw.port, "/a")).status == 500
    for n in range(2):
        assert (await raw_request(gw.port, f"/b/{n}")).status == 200
    assert (await raw_request(gw.port, "/down")).status == 502
    await _label_steps(sampler, 1)

    resp = await raw_request(gw.port, f"/api/metrics/history?range=1h&route={_q('/a')}")
    assert resp.status == 200
    body = resp.json()
    assert (body["kind"], body["label"]) == ("route", "/a")
    assert body["step_s"] == pytest.approx(0.3)  # default: the per-label step
    points = body["points"]
    assert sum(p["requests"] for p in points) == 4
    assert sum(p["server_errors"] for p in points) == 1
    [busy] = [p for p in points if p["requests"]]
    assert busy["error_rate"] == busy["server_error_rate"] == pytest.approx(0.25)
    assert busy["success_rate"] == pytest.approx(0.75)
    assert busy["requests_per_second"] > 0
    assert 0 < busy["latency_ms"]["p50"] <= busy["latency_ms"]["p95"]
    assert busy["active_requests"] is None
    assert busy["upstream_errors"] is None

    b = (await raw_request(gw.port, f"/api/metrics/history?route={_q('/b/{id}')}")).json()
    assert b["label"] == "/b/{id}"
    assert sum(p["requests"] for p in b["points"]) == 2
    assert all(p["error_rate"] in (None, 0) for p in b["points"])

    # Steps coarser than the per-label step merge points; the counts are kept.
    coarse = (await raw_request(gw.port, f"/api/metrics/history?route={_q('/a')}&step=0.9s")).json()
    assert coarse["step_s"] == pytest.approx(0.9)
    assert sum(p["requests"] for p in coarse["points"]) == 4

    address = await raw_request(gw.port, f"/api/metrics/history?backend={_q(backend.url)}")
    assert address.status == 200
    served = address.json()
    assert (served["kind"], served["label"]) == ("backend", backend.url)
    assert sum(p["requests"] for p in served["points"]) == 4
    assert sum(p["upstream_errors"] for p in served["points"]) == 0
    down = (await raw_request(gw.port, f"/api/metrics/history?backend={_q(dead)}")).json()
    assert sum(p["upstream_errors"] for p in down["points"]) >= 1
    assert all(p["latency_ms"]["p95"] is None for p in down["points"])

    idle = await raw_request(gw.port, f"/api/metrics/history?route={_q('/idle')}")
    assert idle.status == 200  # a route the gateway knows, without traffic yet
    assert idle.json()["points"] == []
    totals = (await raw_request(gw.port, "/api/metrics/history")).json()
    assert totals["kind"] == "total"
    assert totals["label"] is None
    assert {"error_rate", "server_error_rate"} <= set(totals["points"][-1])


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("route=%2Fnope", 404),
        ("backend=http%3A%2F%2F10.9.9.9%3A1", 404),
        ("route=", 400),
        ("route=%2Fa&backend=x", 400),
        ("route=%2Fa&range=2d", 400),
        ("route=%2Fa&step=0", 400),
    ],
)
async def test_label_history_unknown_and_bad_params(
    backend: EchoBackend, gateway_factory: GatewayFactory, query: str, status: int
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    resp = await raw_request(gw.port, f"/api/metrics/history?{query}")
    assert resp.status == status
    assert resp.header("Content-Type") == "application/problem+json"


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _sampler(metrics: GatewayMetrics, clock: _Clock, **options: Any) -> MetricsSampler:
    runtime = cast("Runtime", SimpleNamespace(metrics=metrics))
    return MetricsSampler(
        runtime, uptime_s=lambda: 0.0, interval_s=1, step_s=1, clock=clock, wall=clock, **options
    )


def _step(sampler: MetricsSampler, clock: _Clock, metrics: GatewayMetrics, *routes: str) -> None:
    """One request on each of ``routes``, then one per-label step."""
    for label in routes:
        metrics.route(label).record("GET", 200, 0.002, 0, 0)
    clock.now += 1
    sampler.sample()


def test_label_cap_evicts_the_idlest_and_memory_is_bounded() -> None:
    metrics, clock = GatewayMetrics(), _Clock()
    sampler = _sampler(metrics, clock, label_step_s=1, retention_s=4, max_labels=3)
    assert sampler.label_capacity == 4
    sampler.sample()  # the first reading: no step yet
    rings = sampler.labels["route"]
    _step(sampler, clock, metrics, "/r0", "/r1", "/r2")
    assert list(rings) == ["/r0", "/r1", "/r2"]
    _step(sampler, clock, metrics, "/r0", "/r1")  # /r2 idle
    _step(sampler, clock, metrics, "/r0", "/r1", "/r3")  # at the cap: /r2 goes
    assert sorted(rings) == ["/r0", "/r1", "/r3"]
    _step(sampler, clock, metrics, "/r0", "/r1", "/r3", "/r4")  # all busy: /r4 waits
    assert sorted(rings) == ["/r0", "/r1", "/r3"]
    assert not sampler.known("route", "/nope")
    assert sampler.known("route", "/r2")  # still a label the gateway has metrics for
    assert sampler.label_series("route", "/r2", 3600, 1)["points"] == []

    for _ in range(10):  # the ring wraps: only the last 4 steps are kept
        _step(sampler, clock, metrics, "/r0", "/r0", "/r1", "/r3")
    points = sampler.label_series("route", "/r0", 3600, 1)["points"]
    assert isinstance(points, list)
    assert [p["requests"] for p in points] == [2, 2, 2, 2]
    assert points[-1]["timestamp"].startswith("1970-01-01T00:")
    limit = 2 * sampler.max_labels * sampler.label_capacity * POINT_BYTES
    assert 0 < sampler.label_bytes() <= limit
    assert POINT_BYTES == 24
    assert len(sampler.label_steps) == 4


def test_label_series_merges_steps_and_rounds_the_step_up() -> None:
    metrics, clock = GatewayMetrics(), _Clock()
    sampler = _sampler(metrics, clock, label_step_s=2, retention_s=60)
    sampler.sample()
    stats = metrics.route("/a")
    for seconds, status in ((0.002, 200), (0.002, 404), (0.2, 503), (0.2, 200)):
        stats.record("GET", status, seconds, 0, 0)
        clock.now += 2
        sampler.sample()
    fine = sampler.label_series("route", "/a", 3600, 0.5)  # finer than a label step
    assert fine["step_s"] == 2
    fine_points = cast("list[dict[str, object]]", fine["points"])
    assert [p["requests"] for p in fine_points] == [1, 1, 1, 1]
    merged = sampler.label_series("route", "/a", 3600, 4)
    [first, second] = cast("list[dict[str, object]]", merged["points"])
    assert (first["requests"], first["client_errors"], first["error_rate"]) == (2, 1, 0.5)
    assert (second["server_errors"], second["server_error_rate"]) == (1, 0.5)
    p95 = cast("dict[str, float]", second["latency_ms"])["p95"]
    assert math.isclose(p95, 1000 * 0.2, rel_tol=0.3)  # both requests near 200 ms
