"""The dashboard keeps the admin tools' own traffic (this UI polling the gateway
included) and unmatched requests out of its cards, in a small panel of their own:
NiceGUI's simulated `User` against a real gateway and a real echo backend."""

from __future__ import annotations

from kairos_core import Latency, MetricsSnapshot, Rates, Totals, TrafficSummary
from kairos_ui.format import DASH
from kairos_ui.pages.dashboard import aside_values
from nicegui.testing import User

from tests.conftest import RunningGateway
from tests.support import eventually, raw_request

from .helpers import element, text


def _count(user: User, marker: str) -> int:
    value = text(user, marker)
    return -1 if value == DASH else int(value.replace(",", ""))


async def test_admin_traffic_is_shown_apart(user: User, ui_gateway: RunningGateway) -> None:
    await user.open("/")
    await user.should_see("Not counted above")
    assert element(user, "aside-panel") is not None
    # The UI's own polling is admin traffic: it shows in the panel, not in the cards.
    await eventually(lambda: _count(user, "admin-requests") >= 6)
    await eventually(lambda: text(user, "admin-rate") not in (DASH, "0.0"))
    assert text(user, "stat-total_requests") == "0"
    assert text(user, "stat-requests_per_second") == "0.0"
    assert text(user, "stat-success_rate") == DASH
    assert text(user, "stat-p95") == DASH
    assert text(user, "admin-errors") == "0"
    assert text(user, "unmatched-requests") == "0"

    for _ in range(2):
        assert (await raw_request(ui_gateway.port, "/echo/x")).status == 200
    assert (await raw_request(ui_gateway.port, "/nowhere")).status == 404
    assert (await raw_request(ui_gateway.port, "/health")).status == 200
    await eventually(lambda: text(user, "stat-total_requests") == "2")
    await eventually(lambda: text(user, "unmatched-requests") == "1")
    assert text(user, "unmatched-errors") == "1"
    assert text(user, "stat-client_errors") == "0"
    assert text(user, "stat-success_rate") == "100 %"


def _snapshot(
    admin: TrafficSummary | None = None, unmatched: TrafficSummary | None = None
) -> MetricsSnapshot:
    return MetricsSnapshot(
        timestamp="2026-01-01T00:00:00.000Z",
        uptime_s=1.0,
        config_version=1,
        active_requests=0,
        totals=Totals(requests=0, success=0, client_errors=0, server_errors=0),
        requests_per_second=Rates(last_10s=0, last_1m=0),
        latency_ms_1m=Latency(),
        routes=[],
        backends=[],
        admin=admin,
        unmatched=unmatched,
    )


def test_aside_values() -> None:
    snapshot = _snapshot(
        admin=TrafficSummary(
            requests=1234,
            client_errors=2,
            server_errors=1,
            requests_per_second=Rates(last_10s=0.7, last_1m=0.5),
        ),
        unmatched=TrafficSummary(
            requests=5,
            client_errors=5,
            server_errors=0,
            requests_per_second=Rates(last_10s=0, last_1m=0),
        ),
    )
    assert aside_values(snapshot) == {
        "admin-requests": "1,234",
        "admin-rate": "0.7",
        "admin-errors": "3",
        "unmatched-requests": "5",
        "unmatched-rate": "0.0",
        "unmatched-errors": "5",
    }
    # A gateway that does not report them yet: dashes.
    assert set(aside_values(_snapshot()).values()) == {DASH}
