"""Ejected backends and routes with no backend on the Backends, Dashboard and Routes
pages, with NiceGUI's simulated `User`, against a real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kairos_core import BackendConnections, BackendEjection
from kairos_ui.pages.backends import connections_text, ejection_text, routes_down_text
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.support import ResettingServer, eventually, raw_request, route, unused_port

from .conftest import MAIN
from .helpers import element, text


@pytest.mark.parametrize(
    ("ejection", "shown"),
    [
        (None, "\u2013"),
        (BackendEjection(ejected=False), "\u2013"),
        (
            BackendEjection(ejected=True, reason="connect", remaining_s=12),
            "ejected: connections refused or unreachable · back in 12 s",
        ),
        (
            BackendEjection(ejected=False, reason="5xx", probation=True),
            "on probation after: answering 5xx",
        ),
    ],
)
def test_ejection_in_words(ejection: BackendEjection | None, shown: str) -> None:
    assert ejection_text(ejection) == shown


def test_connections_in_words() -> None:
    assert connections_text(None) == "\u2013"
    figures = {"open": 5, "idle": 2, "busy": 3, "max_connections": 8, "max_pending": 10}
    quiet = BackendConnections(**figures, pending=0, opened_total=5, saturated_total=0)
    assert connections_text(quiet) == "3 busy, 2 idle of 8"
    busy = BackendConnections(**figures, pending=4, opened_total=5, saturated_total=7)
    assert connections_text(busy) == "3 busy, 2 idle of 8 · 4 waiting · 7 refused"


def test_routes_down_text() -> None:
    assert routes_down_text([]) == ""
    assert routes_down_text(["/a", "/b"]).endswith(": /a, /b")


@pytest.fixture
async def failing(
    gateway_factory: GatewayFactory, backend_factory: BackendFactory
) -> AsyncIterator[tuple[RunningGateway, ResettingServer]]:
    """A gateway with /x on a good and a dead backend (the dead one ejected), and /down
    on nothing (its breaker open)."""
    dead = await ResettingServer().start()
    good = await backend_factory("good")
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/x", "/x", [good, dead]),
                route("/down", "/down", [f"http://127.0.0.1:{unused_port()}"]),
            ],
            "circuit_breaker": {"failure_threshold": 1},
            "outlier_detection": {"consecutive_failures": 1},
        }
    )
    for _ in range(2):
        await raw_request(gw.port, "/x")
    await raw_request(gw.port, "/down")
    yield gw, dead
    await dead.stop()


@pytest.fixture
async def failing_user(
    failing: tuple[RunningGateway, ResettingServer], ui_env: Any
) -> AsyncIterator[User]:
    ui_env(failing[0].url)
    async with user_simulation(main_file=MAIN) as simulated:
        yield simulated


async def test_backends_page_shows_the_ejection_in_words(
    failing_user: User, failing: tuple[RunningGateway, ResettingServer]
) -> None:
    user, dead = failing_user, failing[1]
    await user.open("/backends")
    await eventually(lambda: element(user, "backends-table").rows != [])
    row = next(r for r in element(user, "backends-table").rows if r["address"] == dead.url)
    assert row["state"] == "ejected"
    assert row["available"] is False
    assert row["ejection"].startswith("ejected: connections closed before an answer")
    good = next(r for r in element(user, "backends-table").rows if r["address"] != dead.url)
    assert good["connections"].endswith(" idle of 1024")
    await user.should_see(marker="routes-down", retries=40)
    assert text(user, "routes-down").endswith(": /down")


async def test_dashboard_and_routes_page_mark_routes_down(failing_user: User) -> None:
    user = failing_user
    await user.open("/")
    # Hidden (so not found) until the first refresh finds a route down.
    await user.should_see(marker="routes-down", retries=40)
    assert text(user, "routes-down").endswith(": /down")
    await user.open("/routes")
    await user.should_see("no backend in rotation: 503", retries=40)
    assert len(user.find(marker="route-down:/down").elements) == 1
    await user.should_not_see(marker="route-down:/x")
