"""`kairos backends` and `kairos health` with ejected backends and routes down."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cli.support import kairos
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, ResettingServer, raw_request, route, unused_port

WIDE = {"COLUMNS": "250"}


@pytest.fixture
async def dead() -> AsyncIterator[ResettingServer]:
    server = await ResettingServer().start()
    yield server
    await server.stop()


async def test_backends_show_ejection_connections_and_routes_down(
    gateway_factory: GatewayFactory, backend: EchoBackend, dead: ResettingServer
) -> None:
    nowhere = f"http://127.0.0.1:{unused_port()}"
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/x", "/x", [backend, dead]),
                route("/down", "/down", [nowhere], circuit_breaker={"failure_threshold": 1}),
            ],
            "circuit_breaker": {"failure_threshold": 1000},
            "outlier_detection": {"consecutive_failures": 2},
        }
    )
    for _ in range(4):
        await raw_request(gw.port, "/x")
    assert dead.accepted == 2
    assert (await raw_request(gw.port, "/down")).status == 502

    human = await kairos("backends", url=gw.url, env=WIDE)
    assert human.code == 0, human.stderr
    dead_line = next(line for line in human.stdout.splitlines() if dead.url in line)
    assert "ejected" in dead_line
    assert "connections closed before an answer" in dead_line
    good_line = next(line for line in human.stdout.splitlines() if backend.url in line)
    assert "/1024" in good_line  # busy+idle/max_connections
    assert "no backend in rotation (503) for: /down" in human.stdout

    data = (await kairos("--json", "backends", url=gw.url)).json()
    ejection = next(b for b in data["backends"] if b["address"] == dead.url)["ejection"]
    assert (ejection["ejected"], ejection["reason"], ejection["count"]) == (True, "reset", 1)
    assert data["routes_down"] == ["/down"]

    health = await kairos("health", url=gw.url, env=WIDE)
    assert health.stdout.startswith("degraded: version ")
    assert "/down" in health.stdout
    status = await kairos("status", url=gw.url, env=WIDE)
    assert "1 ejected" in status.stdout
    assert "Routes down" in status.stdout
