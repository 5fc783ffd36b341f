"""The Audit page, with NiceGUI's simulated `User`, against a real gateway."""

from __future__ import annotations

from kairos_client import KairosClient
from kairos_core import AuditChange, AuditEntry
from kairos_ui.format import DASH
from kairos_ui.pages.audit import entry_row
from nicegui.testing import User

from tests.conftest import RunningGateway
from tests.support import EchoBackend, eventually, raw_request, route

from .helpers import element


def test_an_entry_as_one_row() -> None:
    entry = AuditEntry(
        id=7,
        at="2026-12-07T19:00:00Z",
        actor="ci",
        source="",
        trigger="api",
        previous_version="a" * 20,
        version="b" * 20,
        changes=[
            AuditChange(route="GET /b", change="added"),
            AuditChange(setting="cors", change="changed"),
            AuditChange(route="GET /c", change="removed"),
        ],
    )
    assert entry_row(entry) == {
        "id": 7,
        "at": "2026-12-07 19:00:00",
        "actor": "ci",
        "source": DASH,
        "trigger": "api",
        "changes": "+ GET /b; ~ cors; - GET /c",
        "version": "b" * 12,
    }


async def test_the_trail_and_a_rollback_from_the_page(
    user: User, ui_gateway: RunningGateway, backend: EchoBackend
) -> None:
    async with KairosClient(ui_gateway.url) as client:
        [start] = (await client.config_versions()).versions
        await client.create_route(route("/added", "/x", [backend], methods=["GET"]))
    assert (await raw_request(ui_gateway.port, "/added")).status == 200
    await user.open("/audit")
    await user.should_see(marker="audit-table", retries=40)

    def changes() -> list[str]:
        return [r["changes"] for r in element(user, "audit-table").rows]

    await eventually(lambda: changes() == ["+ GET /added"])
    rows = element(user, "audit-table").rows
    assert [(r["actor"], r["trigger"]) for r in rows] == [("loopback", "api")]

    user.find(marker=f"rollback:{start.version}").click()
    await user.should_see(f"Make version {start.version} live again?")
    user.find(marker="confirm-rollback").click()
    await eventually(lambda: changes() == ["- GET /added", "+ GET /added"])
    assert [r["trigger"] for r in element(user, "audit-table").rows] == ["rollback", "api"]
    assert (await raw_request(ui_gateway.port, "/added")).status == 404
    await user.should_see(marker=f"live:{start.version}")
