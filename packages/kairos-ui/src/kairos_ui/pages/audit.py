"""Audit (``/audit``): who changed the configuration, what changed, and rollback.

The gateway's audit trail (``GET /api/audit``), newest first, one page at a time
("Older" loads the next), and the configuration versions it keeps
(``GET /api/config/versions``), each but the live one with a "Roll back" button that
asks for confirmation and then calls ``POST /api/config/rollback`` with the version
the page last saw live as ``If-Match`` (a change made meanwhile is refused, not undone).
"""

from __future__ import annotations

from typing import Any

from kairos_client import KairosClientError
from kairos_core import AuditEntry, ConfigVersion
from nicegui import ui

from .. import live
from ..format import DASH
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings

__all__ = ["entry_row", "register"]

PAGE = 25


def _column(name: str, label: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "label": label, "field": name, "align": "left", **extra}


COLUMNS: list[dict[str, Any]] = [
    _column("at", "When (UTC)"),
    _column("actor", "Who"),
    _column("source", "From"),
    _column("trigger", "How"),
    _column("changes", "What changed"),
    _column("version", "Version"),
]


def entry_row(entry: AuditEntry) -> dict[str, Any]:
    """A table row: the changes as one readable line (``+ GET /b; ~ rate_limit``)."""
    signs = {"added": "+", "changed": "~", "removed": "-"}
    changes = "; ".join(
        f"{signs[c.change]} {c.route if c.route is not None else c.setting}" for c in entry.changes
    )
    return {
        "id": entry.id,
        "at": entry.at.replace("T", " ").removesuffix("Z"),
        "actor": entry.actor,
        "source": entry.source or DASH,
        "trigger": entry.trigger,
        "changes": changes,
        "version": entry.version[:12],
    }


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/audit", title="Kairos · audit")
    def audit_page() -> None:
        next_before: int | None = None
        live_version: str | None = None
        with frame(settings, "/audit") as banner:
            with ui.row().classes("w-full items-center gap-3"):
                ui.label("Audit").classes("text-2xl font-semibold")
                ui.space()
                ui.button("Refresh", icon="refresh", on_click=lambda: refresh()).props("flat").mark(
                    "refresh"
                )
            ui.label(
                "Every configuration that went live: through the API, the CLI or this UI, "
                "a file edit, SIGHUP, a cluster update, a rollback. Values are never "
                "recorded, only what changed."
            ).classes("text-sm opacity-70")
            table = ui.table(columns=COLUMNS, rows=[], row_key="id").classes("w-full")
            table.props("flat bordered no-data-label='No change since the gateway started'")
            table.mark("audit-table")
            older = ui.button("Older", icon="expand_more", on_click=lambda: load_older())
            older.props("flat").mark("older")
            older.visible = False
            ui.label("Kept versions").classes("text-lg font-semibold pt-4")
            versions_box = ui.column().classes("w-full gap-1").mark("versions")

        def show_versions(versions: list[ConfigVersion]) -> None:
            nonlocal live_version
            versions_box.clear()
            with versions_box:
                for version in versions:
                    with ui.row().classes("items-center gap-3"):
                        ui.label(version.version).classes("font-mono text-sm")
                        ui.label(version.saved_at or "").classes("text-sm opacity-70")
                        if version.live:
                            live_version = version.version
                            ui.badge("live").mark(f"live:{version.version}")
                        elif gateway.allows("operator"):
                            ui.button(
                                "Roll back",
                                icon="history",
                                on_click=lambda v=version.version: confirm(v),
                            ).props("flat dense").mark(f"rollback:{version.version}")

        async def confirm(version: str) -> None:
            with ui.dialog() as dialog, ui.card():
                ui.label(f"Make version {version} live again?")
                ui.label("It replaces the running configuration and is saved.").classes(
                    "text-sm opacity-70"
                )
                with ui.row():
                    ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
                    ui.button("Roll back", on_click=lambda: dialog.submit(True)).mark(
                        "confirm-rollback"
                    )
            if await dialog:
                await rollback(version)

        async def rollback(version: str) -> None:
            if_match = None if live_version is None else f'"{live_version}"'
            try:
                await gateway.client.rollback(version, if_match=if_match)
            except KairosClientError as exc:
                ui.notify(f"Not rolled back: {describe(exc, gateway.url)}", type="negative")
                return
            ui.notify(f"Version {version} is live again", type="positive")
            await refresh()

        async def refresh() -> None:
            nonlocal next_before
            client = gateway.client
            try:
                page = await client.audit(limit=PAGE)
                versions = (await client.config_versions()).versions
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            table.rows = [entry_row(e) for e in page.entries]
            next_before = page.next
            older.visible = next_before is not None
            show_versions(versions)

        async def load_older() -> None:
            nonlocal next_before
            if next_before is None:
                return
            try:
                page = await gateway.client.audit(limit=PAGE, before=next_before)
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            table.rows = [*table.rows, *(entry_row(e) for e in page.entries)]
            next_before = page.next
            older.visible = next_before is not None

        ui.timer(0, refresh, once=True)
        live.follow(gateway, on_config=refresh)
