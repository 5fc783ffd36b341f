"""Load balancing, retries, circuit breakers and health checks against real backends."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.gateway.test_ops import sample
from tests.support import (
    EchoBackend,
    ResettingServer,
    eventually,
    raw_request,
    route,
    unused_port,
)

# Fast retries with a budget wide enough that it never interferes (its own test below).
FAST = {"initial_backoff_ms": 1, "max_backoff_ms": 5, "budget_ratio": 1.0}


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **top}


async def backends(factory: BackendFactory, *names: str) -> list[EchoBackend]:
    return [await factory(name) for name in names]


async def hits(gw: RunningGateway, n: int, target: str = "/x", **kw: Any) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        resp = await raw_request(gw.port, target, **kw)
        assert resp.status == 200, resp.body
        seen[resp.header("X-Backend") or "?"] += 1
    return seen


async def metrics_text(gw: RunningGateway) -> str:
    return (await raw_request(gw.port, "/metrics")).body.decode()


@pytest.fixture
async def dead() -> AsyncIterator[ResettingServer]:
    """A backend that accepts connections and closes them at once."""
    server = await ResettingServer().start()
    yield server
    await server.stop()


# -- load balancing ------------------------------------------------------------------


async def test_weighted_is_smooth_and_exact_over_a_cycle(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b, c = await backends(backend_factory, "a", "b", "c")
    r = route("/x", "/x", [a, b, c], load_balancing_strategy="weighted")
    for backend_cfg, weight in zip(r["backends"], (3, 2, 1), strict=True):
        backend_cfg["weight"] = weight
    gw = await gateway_factory(cfg(r))
    order = []
    for _ in range(6):
        order.append((await raw_request(gw.port, "/x")).header("X-Backend"))
    # Interleaved as nginx does, not a a a b b c.
    assert order == ["a", "b", "a", "c", "b", "a"]
    assert await hits(gw, 60) == Counter({"a": 30, "b": 20, "c": 10})


async def test_round_robin_skips_a_backend_whose_breaker_is_open(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    (good,) = await backends(backend_factory, "good")
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [dead, good]),
            circuit_breaker={"failure_threshold": 2, "reset_timeout_s": 60},
        )
    )
    statuses = [(await raw_request(gw.port, "/x")).status for _ in range(12)]
    # Two failures open the breaker; after that no connection is even attempted.
    assert statuses.count(502) == 2
    assert dead.accepted == 2
    text = await metrics_text(gw)
    assert sample(text, "kairos_circuit_breaker_state", backend=dead.url) == 1
    assert sample(text, "kairos_circuit_breaker_state", backend=good.url) == 0


async def test_all_breakers_open_is_503_with_retry_after(
    gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [dead]),
            circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 30},
        )
    )
    assert (await raw_request(gw.port, "/x")).status == 502
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 503
    assert resp.json()["type"] == "circuit_open"
    assert 1 <= int(resp.header("Retry-After") or 0) <= 30
    assert dead.accepted == 1


async def test_half_open_probe_closes_the_breaker_when_the_backend_is_back(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    port = unused_port()
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [f"http://127.0.0.1:{port}"]),
            circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 0.2},
        )
    )
    assert (await raw_request(gw.port, "/x")).status == 502  # nothing listens yet
    assert (await raw_request(gw.port, "/x")).status == 503  # open
    backend = await backend_factory("revived", port=port)

    async def served() -> bool:
        return (await raw_request(gw.port, "/x")).status == 200

    await eventually(served)
    runtime = gw.gateway.runtime
    assert runtime.registry.get(runtime.snapshot.routes[0].backends[0].endpoint)
    assert runtime.snapshot.routes[0].backends[0].breaker.state == "closed"
    assert backend.requests


async def test_least_connections_sends_new_requests_to_idle_backends(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    slow, b, c = await backends(backend_factory, "slow", "b", "c")
    slow.delay_s = 5.0
    gw = await gateway_factory(
        cfg(route("/x", "/x", [slow, b, c], load_balancing_strategy="least_connections"))
    )
    # Three at once: one lands on each backend; the slow one stays in flight.
    first = [asyncio.create_task(raw_request(gw.port, "/x")) for _ in range(3)]
    await eventually(lambda: _true(len(slow.requests) == 1))
    seen = await hits(gw, 20)
    assert seen["slow"] == 0
    assert seen["b"] >= 8
    assert seen["c"] >= 8
    slow.delay_s = 0
    for task in first:
        task.cancel()


async def _true(value: bool) -> bool:
    return value


async def test_random_spreads_uniformly(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    group = await backends(backend_factory, "a", "b", "c")
    gw = await gateway_factory(cfg(route("/x", "/x", group, load_balancing_strategy="random")))
    seen = await hits(gw, 300)
    assert set(seen) == {"a", "b", "c"}
    assert all(60 <= n <= 140 for n in seen.values()), seen


async def test_ip_hash_uses_the_socket_address_unless_the_peer_is_trusted(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    group = await backends(backend_factory, "a", "b", "c")
    untrusted = await gateway_factory(
        cfg(route("/x", "/x", group, load_balancing_strategy="ip_hash"))
    )
    # The peer is not a trusted proxy: X-Forwarded-For cannot move the client.
    spoofed = Counter()
    for i in range(30):
        resp = await raw_request(untrusted.port, "/x", headers=[("X-Forwarded-For", f"10.0.0.{i}")])
        spoofed[resp.header("X-Backend")] += 1
    assert len(spoofed) == 1

    trusted = await gateway_factory(
        cfg(
            route("/x", "/x", group, load_balancing_strategy="ip_hash"),
            trusted_proxies=["127.0.0.1/32"],
        )
    )
    placement = {}
    for i in range(60):
        client = f"198.51.100.{i}"
        first = await raw_request(trusted.port, "/x", headers=[("X-Forwarded-For", client)])
        again = await raw_request(trusted.port, "/x", headers=[("X-Forwarded-For", client)])
        assert first.header("X-Backend") == again.header("X-Backend")
        placement[client] = first.header("X-Backend")
    assert set(placement.values()) == {"a", "b", "c"}

    # Without backend c, only c's clients move (rendezvous hashing).
    smaller = await gateway_factory(
        cfg(
            route("/x", "/x", group[:2], load_balancing_strategy="ip_hash"),
            trusted_proxies=["127.0.0.1/32"],
        )
    )
    for client, before in placement.items():
        after = (
            await raw_request(smaller.port, "/x", headers=[("X-Forwarded-For", client)])
        ).header("X-Backend")
        if before != "c":
            assert after == before, client


async def test_latency_aware_prefers_fast_backends_and_retries_a_recovered_one(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    slow, b, c = await backends(backend_factory, "slow", "b", "c")
    slow.delay_s = 0.05
    gw = await gateway_factory(
        cfg(route("/x", "/x", [slow, b, c], load_balancing_strategy="latency_aware")),
        # Long enough that a slow backend stays costly for a whole burst on a busy
        # machine, short enough that its recovery shows within seconds.
        ewma_decay_s=2.0,
    )

    async def burst(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()

        async def one() -> None:
            resp = await raw_request(gw.port, "/x")
            seen[resp.header("X-Backend") or "?"] += 1

        for _ in range(n // 4):
            await asyncio.gather(*(one() for _ in range(4)))
        return seen

    seen = await burst(100)
    assert seen["b"] + seen["c"] >= 80, seen

    slow.delay_s = 0
    before = len(slow.requests)

    async def slow_used_again() -> bool:
        await burst(8)
        return len(slow.requests) > before + 2

    await eventually(slow_used_again, timeout=15)


# -- retries -------------------------------------------------------------------------


async def test_get_is_retried_on_another_backend(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    failing, good = await backends(backend_factory, "failing", "good")
    failing.status = 503
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [failing, good],
                retry_config=FAST,
            )
        )
    )
    seen = await hits(gw, 10)
    assert seen == Counter({"good": 10})
    # Round robin sent every other request to the failing backend first.
    assert len(failing.requests) == 5
    text = await metrics_text(gw)
    assert sample(text, "kairos_retries_total", route="/x", reason="status_503") == 5


async def test_connection_errors_are_retried_for_idempotent_methods(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    (good,) = await backends(backend_factory, "good")
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [dead, good],
                retry_config=FAST,
            ),
            circuit_breaker={"failure_threshold": 100},
        )
    )
    for method in ("GET", "PUT", "DELETE"):
        for _ in range(2):
            assert (await raw_request(gw.port, "/x", method=method)).status == 200
    assert dead.accepted >= 3


async def test_post_to_a_dead_backend_is_not_replayed(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    (good,) = await backends(backend_factory, "good")
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [dead, good],
                retry_config=FAST,
            ),
            circuit_breaker={"failure_threshold": 100},
        )
    )
    statuses = [
        (await raw_request(gw.port, "/x", method="POST", body=b"order")).status for _ in range(4)
    ]
    assert sorted(statuses) == [200, 200, 502, 502]
    assert len(good.requests) == 2  # never the replay of a POST that hit the dead one


async def test_post_is_retried_when_the_route_opts_in(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    (good,) = await backends(backend_factory, "good")
    retry = {**FAST, "retry_non_idempotent": True}
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [dead, good], retry_config=retry),
            circuit_breaker={"failure_threshold": 100},
        )
    )
    for _ in range(4):
        resp = await raw_request(gw.port, "/x", method="POST", body=b"order")
        assert resp.status == 200
        assert resp.json()["body"] == "order"  # the buffered body is replayed


async def test_exhausted_retries_relay_the_last_response(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    a.status = b.status = 503
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [a, b],
                retry_config={**FAST, "max_retries": 3},
            )
        )
    )
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 503
    assert resp.header("X-Backend") in {"a", "b"}
    assert len(a.requests) + len(b.requests) == 4


async def test_retry_after_from_the_backend_is_capped(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    a.status = 503
    a.retry_after = "3600"
    gw = await gateway_factory(
        cfg(route("/x", "/x", [a, b], retry_config={**FAST, "max_backoff_ms": 20}))
    )
    async with asyncio.timeout(5):  # an hour-long Retry-After would hang here
        assert await hits(gw, 4) == Counter({"b": 4})


async def test_no_retry_after_the_response_has_started(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    gw = await gateway_factory(
        cfg(route("/stream", "/stream", [a, b], retry_config={"initial_backoff_ms": 1}))
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)
    await a.stop()  # dies mid-response (a got the first request)
    # The client sees a cut response, and the request is not sent again.
    assert b"0\r\n\r\n" not in await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert b.requests == []


async def test_total_deadline_caps_all_tries(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    a.delay_s = b.delay_s = 2.0
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [a, b],
                retry_config={"max_retries": 5, "initial_backoff_ms": 1},
                timeouts={"read_ms": 150, "total_ms": 400},
            )
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 504
    assert loop.time() - started < 1.5
    assert len(a.requests) + len(b.requests) <= 3


async def test_retry_budget_stops_retry_storms(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    a.status = b.status = 503
    retry = {
        "initial_backoff_ms": 1,
        "max_backoff_ms": 2,
        "budget_ratio": 0.0,
        "budget_min_retries": 2,
    }
    gw = await gateway_factory(cfg(route("/x", "/x", [a, b], retry_config=retry)))
    for _ in range(10):
        assert (await raw_request(gw.port, "/x")).status == 503
    # Ten requests with up to three retries each, but the budget allowed two in total:
    # the first request spends both, its third retry and every later first retry are
    # refused.
    assert len(a.requests) + len(b.requests) == 12
    text = await metrics_text(gw)
    assert sample(text, "kairos_retries_total", route="/x", reason="budget_exhausted") == 10


# -- health checks --------------------------------------------------------------------


HEALTH = {"interval_s": 0.05, "timeout_s": 0.05, "healthy_threshold": 1, "unhealthy_threshold": 2}


async def test_unhealthy_backends_leave_rotation_and_come_back(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [a, b], backend_extra={"health_check_path": "/health"}),
            health_check=HEALTH,
        )
    )
    await eventually(lambda: _true(a.probes > 0 and b.probes > 0))
    a.health_status = 500

    async def a_down() -> bool:
        return sample(await metrics_text(gw), "kairos_backend_up", backend=a.url) == 0

    await eventually(a_down)
    assert await hits(gw, 10) == Counter({"b": 10})

    b.health_status = 503

    async def all_down() -> bool:
        return (await raw_request(gw.port, "/x")).status == 503

    await eventually(all_down)
    resp = await raw_request(gw.port, "/x")
    assert resp.json()["type"] == "no_healthy_backend"

    a.health_status = b.health_status = 200

    async def both_back() -> bool:
        responses = [await raw_request(gw.port, "/x") for _ in range(4)]
        return {r.header("X-Backend") for r in responses if r.status == 200} == {"a", "b"}

    await eventually(both_back)


async def test_probes_stop_on_shutdown(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    (a,) = await backends(backend_factory, "a")
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [a], backend_extra={"health_check_path": "/health"}),
            health_check=HEALTH,
        )
    )
    await eventually(lambda: _true(a.probes >= 2))
    tasks = [task for _, task in gw.gateway.health._tasks.values()]
    assert tasks
    await gw.gateway.stop(drain_timeout_s=1)
    assert all(task.done() for task in tasks)


async def test_api_backends_reports_state(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backends(backend_factory, "a", "b")
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [a, b], backend_extra={"health_check_path": "/health"}),
            health_check=HEALTH,
        )
    )
    await hits(gw, 4)
    await eventually(lambda: _true(a.probes > 0 and b.probes > 0))
    body = (await raw_request(gw.port, "/api/backends")).json()
    by_address = {item["address"]: item for item in body["backends"]}
    assert set(by_address) == {a.url, b.url}
    item = by_address[a.url]
    assert item["routes"] == ["/x"]
    assert item["healthy"] is True
    assert item["available"] is True
    assert item["health_check"]["path"] == "/health"
    assert item["health_check"]["last_check"].endswith("Z")
    assert item["circuit_breaker"] == {"state": "closed", "retry_after_s": 0}
    assert item["inflight"] == 0
    assert item["ewma_latency_ms"] > 0


async def test_api_backends_needs_the_admin_token_when_one_is_set(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(cfg(), admin_token="s3cret-admin-token")
    assert (await raw_request(gw.port, "/api/backends")).status == 401
    wrong = await raw_request(gw.port, "/api/backends", headers=[("Authorization", "Bearer nope")])
    assert wrong.status == 401
    assert wrong.header("WWW-Authenticate") == 'Bearer realm="kairos"'
    ok = await raw_request(
        gw.port, "/api/backends", headers=[("Authorization", "Bearer s3cret-admin-token")]
    )
    assert ok.status == 200


# -- chaos ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["round_robin", "least_connections"])
async def test_chaos_a_backend_dies_and_comes_back(
    backend_factory: BackendFactory,
    gateway_factory: GatewayFactory,
    strategy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kairos.gateway")
    a, b, c = await backends(backend_factory, "a", "b", "c")
    victim_port = b.port
    gw = await gateway_factory(
        cfg(
            route(
                "/x",
                "/x",
                [a, b, c],
                load_balancing_strategy=strategy,
                retry_config={**FAST, "max_retries": 2},
                backend_extra={"health_check_path": "/health"},
            ),
            circuit_breaker={"failure_threshold": 1, "reset_timeout_s": 0.3},
            # Slower to mark the backend down than the traffic is to hit it, so the
            # breaker is what reacts first, then health checks hold it out.
            health_check={**HEALTH, "interval_s": 0.1, "timeout_s": 0.1, "unhealthy_threshold": 3},
        )
    )
    failures: list[int] = []
    served: Counter[str] = Counter()

    async def client(n: int) -> None:
        for _ in range(n):
            resp = await raw_request(gw.port, "/x")
            if resp.status != 200:
                failures.append(resp.status)
            served[resp.header("X-Backend") or "?"] += 1

    await asyncio.gather(*(client(25) for _ in range(4)))
    assert served["b"] > 0
    await b.stop()  # killed: open keep-alive connections are closed too
    await asyncio.gather(*(client(25) for _ in range(4)))
    state = gw.gateway.runtime.snapshot.routes[0].backends[1]
    assert not state.available()

    revived = await backend_factory("b", port=victim_port)

    async def back_in_rotation() -> bool:
        await client(6)
        return len(revived.requests) > 0

    await eventually(back_in_rotation, timeout=15)
    assert failures == []
    assert state.healthy
    transitions = [
        r.fields["new"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "circuit breaker state changed" and r.fields["backend"] == b.url  # type: ignore[attr-defined]
    ]
    assert transitions[0] == "open"
    assert transitions[-1] == "closed"
