"""Swapping the live configuration: the next request sees it, backend state carries over."""

from __future__ import annotations

import asyncio

from kairos_core import load_config

from tests.conftest import BackendFactory, GatewayFactory
from tests.support import raw_request, route


async def test_apply_swaps_routes_and_keeps_backend_state(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a = await backend_factory("a")
    b = await backend_factory("b")
    gw = await gateway_factory({"version": 1, "routers": [route("/x", "/x", [a])]})
    assert (await raw_request(gw.port, "/x")).status == 200
    state_a = gw.gateway.runtime.snapshot.routes[0].backends[0]

    gw.gateway.apply(
        load_config({"version": 1, "routers": [route("/y", "/y", [a]), route("/z", "/z", [b])]})
    )
    assert (await raw_request(gw.port, "/x")).status == 404
    assert (await raw_request(gw.port, "/y")).header("X-Backend") == "a"
    assert (await raw_request(gw.port, "/z")).header("X-Backend") == "b"
    assert gw.gateway.runtime.snapshot.generation == 2
    # The same backend keeps its state object (breaker, EWMA, in-flight count).
    assert gw.gateway.runtime.snapshot.routes[0].backends[0] is state_a

    gw.gateway.apply(load_config({"version": 1, "routers": [route("/z", "/z", [b])]}))
    assert [s.address for s in gw.gateway.runtime.registry] == [b.url]
    assert (await raw_request(gw.port, "/health")).json()["config_version"] == 3


async def test_probes_stop_when_a_backend_leaves_the_config(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a = await backend_factory("a")
    b = await backend_factory("b")
    health = {"interval_s": 0.05, "timeout_s": 0.05}
    probed = {"health_check_path": "/health"}
    gw = await gateway_factory(
        {
            "version": 1,
            "health_check": health,
            "routers": [route("/x", "/x", [a, b], backend_extra=probed)],
        }
    )
    async with asyncio.timeout(5):
        while not (a.probes and b.probes):
            await asyncio.sleep(0.01)
    tasks = {t.state.address: task for t, task in gw.gateway.health._tasks.values()}
    gw.gateway.apply(
        load_config(
            {
                "version": 1,
                "health_check": health,
                "routers": [route("/x", "/x", [b], backend_extra=probed)],
            }
        )
    )
    done, _ = await asyncio.wait([tasks[a.url]], timeout=5)
    assert done  # the departed backend's probe loop has ended
    assert not tasks[b.url].done()  # the backend that stays keeps its probe loop
    assert {t.state.address for t, _ in gw.gateway.health._tasks.values()} == {b.url}


async def test_a_shared_backend_takes_the_first_routes_breaker_settings(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a = await backend_factory("a")
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/x", "/x", [a], circuit_breaker={"failure_threshold": 2}),
                route("/y", "/y", [a], circuit_breaker={"failure_threshold": 9}),
            ],
        }
    )
    x, y = gw.gateway.runtime.snapshot.routes
    assert x.backends[0] is y.backends[0]  # one state for the shared backend
    assert x.backends[0].breaker.config.failure_threshold == 2
