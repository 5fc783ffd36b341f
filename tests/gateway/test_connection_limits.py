"""Per-backend connection limits: at most ``max_connections`` upstream connections, a
FIFO queue of ``max_pending`` requests waiting ``pending_timeout_ms`` at most, then
failover or 503 ``backend_saturated``; idle connections kept up to the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kairos_gateway.upstream import Endpoint, PoolLimits, UpstreamPool, UpstreamSaturated

from tests.conftest import BackendFactory, GatewayFactory
from tests.gateway.test_ops import sample
from tests.support import EchoBackend, api_call, eventually, raw_request, route

T = {"connect_timeout": 2.0, "read_timeout": 5.0}


def pending(pool: UpstreamPool, backend: EchoBackend) -> int:
    stats = pool.endpoint_stats(Endpoint("http", "127.0.0.1", backend.port))
    return 0 if stats is None else stats.pending


def limited(**limits: Any) -> dict[str, Any]:
    return {"connection_limits": limits}


async def _get(pool: UpstreamPool, backend: EchoBackend, path: str, limits: PoolLimits) -> bytes:
    endpoint = Endpoint("http", "127.0.0.1", backend.port)
    response = await pool.request(
        endpoint, "GET", path, [("Host", endpoint.host_header)], limits=limits, **T
    )
    body = b""
    while chunk := await response.read():
        body += chunk
    return body


async def test_pool_queues_in_order_beyond_the_limit(backend: EchoBackend) -> None:
    backend.delay_s = 0.05
    pool = UpstreamPool()
    limits = PoolLimits(max_connections=2, max_pending=10, pending_timeout_s=5)
    finished: list[int] = []

    async def one(i: int) -> None:
        await _get(pool, backend, f"/r/{i}", limits)
        finished.append(i)

    tasks = [asyncio.create_task(one(i)) for i in range(8)]
    await eventually(lambda: len(backend.requests) == 2)
    endpoint = Endpoint("http", "127.0.0.1", backend.port)
    stats = pool.endpoint_stats(endpoint)
    assert stats is not None
    assert (stats.open, stats.busy, stats.pending) == (2, 2, 6)
    await asyncio.gather(*tasks)
    assert backend.accepted == 2  # the queue reused the two connections
    # First come, first served: the backend saw the requests in the order they came.
    assert [r.uri for r in backend.requests] == [f"/r/{i}" for i in range(8)]
    stats = pool.endpoint_stats(endpoint)
    assert stats is not None
    assert (stats.open, stats.idle, stats.pending, stats.opened_total) == (2, 2, 0, 2)
    await pool.close()


async def test_pool_refuses_past_the_queue_and_after_the_timeout(backend: EchoBackend) -> None:
    backend.delay_s = 0.3
    pool = UpstreamPool()
    full = PoolLimits(max_connections=1, max_pending=1, pending_timeout_s=5)
    busy = asyncio.create_task(_get(pool, backend, "/busy", full))
    queued = asyncio.create_task(_get(pool, backend, "/queued", full))
    await eventually(lambda: len(backend.requests) == 1)
    endpoint = Endpoint("http", "127.0.0.1", backend.port)
    await eventually(lambda: pending(pool, backend) == 1)
    with pytest.raises(UpstreamSaturated) as info:  # the queue is full
        await _get(pool, backend, "/overflow", full)
    assert info.value.kind == "saturated"
    short = PoolLimits(max_connections=1, max_pending=5, pending_timeout_s=0.05)
    with pytest.raises(UpstreamSaturated):  # waited too long
        await _get(pool, backend, "/too-late", short)
    await asyncio.gather(busy, queued)
    stats = pool.endpoint_stats(endpoint)
    assert stats is not None
    assert stats.saturated_total == 2
    assert stats.pending == 0
    assert "/overflow" not in [r.uri for r in backend.requests]
    await pool.close()


async def test_a_cancelled_waiter_leaves_the_queue(backend: EchoBackend) -> None:
    backend.delay_s = 0.2
    pool = UpstreamPool()
    limits = PoolLimits(max_connections=1, max_pending=5, pending_timeout_s=5)
    first = asyncio.create_task(_get(pool, backend, "/first", limits))
    waiting = asyncio.create_task(_get(pool, backend, "/gone", limits))
    await eventually(lambda: pending(pool, backend) == 1)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert pending(pool, backend) == 0
    await first
    assert await _get(pool, backend, "/next", limits)  # the connection is free again
    assert [r.uri for r in backend.requests] == ["/first", "/next"]
    await pool.close()


async def test_gateway_answers_503_backend_saturated_past_the_queue(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    backend.delay_s = 0.3
    config = {
        **limited(max_connections=2, max_pending=3, pending_timeout_ms=5000),
        "routers": [route("/a", "/a", [backend])],
    }
    gw = await gateway_factory(config)
    answers = await asyncio.gather(*(raw_request(gw.port, "/a") for _ in range(10)))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * 5 + [503] * 5
    refused = [a for a in answers if a.status == 503]
    assert {a.json()["type"] for a in refused} == {"backend_saturated"}
    assert {a.header("Retry-After") for a in refused} == {"5"}
    assert backend.accepted == 2  # never more connections than the limit
    assert len(backend.requests) == 5

    listed = (await api_call(gw.port, "GET", "/api/backends")).json()["backends"]
    connections = listed[0]["connections"]
    assert connections["max_connections"] == 2
    assert connections["opened_total"] == 2
    assert connections["saturated_total"] == 5
    assert connections["pending"] == 0
    metrics = (await raw_request(gw.port, "/metrics")).body.decode()
    assert sample(metrics, "kairos_upstream_saturated_total", backend=backend.url) == 5
    assert sample(metrics, "kairos_upstream_connections_opened_total", backend=backend.url) == 2


async def test_a_saturated_backend_fails_over_when_the_route_retries(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    slow, spare = await backend_factory("slow"), await backend_factory("spare")
    slow.delay_s = 0.3
    config = {"routers": [route("/a", "/a", [slow, spare], retry_config={"max_retries": 1})]}
    config["routers"][0]["backends"][0].update(max_connections=1, max_pending=0)
    gw = await gateway_factory(config)
    answers = await asyncio.gather(
        *(raw_request(gw.port, "/a", method="POST", body=b"x") for _ in range(6))
    )
    assert [a.status for a in answers] == [200] * 6
    assert slow.accepted == 1
    # One at a time on the slow one; the ones the balancer sent there while it was busy
    # moved to the spare (a POST too: nothing had been sent).
    assert (len(slow.requests), len(spare.requests)) == (1, 5)
    metrics = (await raw_request(gw.port, "/metrics")).body.decode()
    moved = sample(metrics, "kairos_retries_total", route="/a", reason="saturated")
    assert moved is not None
    assert moved >= 1


async def test_busy_connections_are_kept_not_churned(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    # More concurrent requests than the old fixed idle cache of 64, several rounds:
    # connections are opened once and reused, never more than the limit.
    backend.delay_s = 0.01
    config = {
        **limited(max_connections=80, max_pending=1000),
        "routers": [route("/a", "/a", [backend])],
    }
    gw = await gateway_factory(config)
    for _ in range(3):
        answers = await asyncio.gather(*(raw_request(gw.port, "/a") for _ in range(100)))
        assert {a.status for a in answers} == {200}
    assert backend.accepted <= 80
    pool = gw.gateway.runtime.pool
    assert pool.stats.connections_opened == backend.accepted


async def test_limits_follow_a_configuration_change(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    backend.delay_s = 0.2
    one = {**limited(max_connections=1, max_pending=0), "routers": [route("/a", "/a", [backend])]}
    gw = await gateway_factory(one)
    answers = await asyncio.gather(*(raw_request(gw.port, "/a") for _ in range(2)))
    assert sorted(a.status for a in answers) == [200, 503]
    two = {**one, **limited(max_connections=2, max_pending=0)}
    assert (await api_call(gw.port, "PUT", "/api/config", two)).status == 200
    answers = await asyncio.gather(*(raw_request(gw.port, "/a") for _ in range(2)))
    assert [a.status for a in answers] == [200, 200]
