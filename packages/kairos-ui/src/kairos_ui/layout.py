"""The frame every page shares: header with navigation, the live-events indicator,
dark-mode toggle, the "gateway unreachable" banner, and logout when a login is
configured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nicegui import app, ui

from . import live
from .settings import UiSettings

__all__ = ["NAV", "Banner", "frame"]

#: (path, label, icon) of every page, in menu order.
NAV: tuple[tuple[str, str, str], ...] = (
    ("/", "Dashboard", "dashboard"),
    ("/routes", "Routes", "alt_route"),
    ("/backends", "Backends & health", "dns"),
    ("/config", "Configuration", "tune"),
    ("/plugins", "Plugins", "extension"),
    ("/metrics", "Metrics", "insights"),
    ("/audit", "Audit", "history"),
)


@dataclass
class Banner:
    """A page-wide notice about the gateway connection; hidden while all is well."""

    row: ui.row
    label: ui.label

    def show(self, message: str) -> None:
        self.label.text = message
        self.row.visible = True

    def clear(self) -> None:
        self.row.visible = False

    @property
    def shown(self) -> bool:
        return bool(self.row.visible)


@contextmanager
def frame(settings: UiSettings, current: str) -> Iterator[Banner]:
    """Lay out the header and navigation, then yield the page's gateway banner; the
    page builds its content inside the ``with`` block."""
    dark = ui.dark_mode()
    dark.bind_value(app.storage.user, "dark_mode")
    ui.colors(primary="#1f6feb")
    with ui.header(elevated=True).classes("items-center gap-1 px-4 py-1"):
        ui.label("Kairos").classes("text-lg font-bold mr-4")
        for path, label, icon in NAV:
            button = ui.button(label, icon=icon, on_click=lambda p=path: ui.navigate.to(p))
            button.props("flat no-caps color=white").mark(f"nav-{path.strip('/') or 'dashboard'}")
            if path == current:
                button.classes("bg-white/20")
        ui.space()
        live.indicator()  # the event stream's state, once the page follows it
        ui.label(settings.gateway_url).classes("text-xs opacity-80").mark("gateway-url")
        ui.button(icon="dark_mode", on_click=dark.toggle).props("flat round color=white").tooltip(
            "Dark mode"
        ).mark("dark-toggle")
        if settings.login_required:
            who = " · ".join(str(app.storage.user.get(k) or "") for k in ("name", "role"))
            ui.label(who.strip(" ·")).classes("text-xs opacity-80").mark("whoami")
            ui.button(icon="logout", on_click=lambda: ui.navigate.to("/logout")).props(
                "flat round color=white"
            ).tooltip("Log out").mark("logout")
    with ui.column().classes("w-full max-w-screen-xl mx-auto p-4 gap-4"):
        with ui.row().classes(
            "w-full items-center gap-2 p-3 rounded bg-red-100 text-red-900"
        ) as row:
            ui.icon("cloud_off")
            text = ui.label("").mark("gateway-banner")
        row.visible = False
        yield Banner(row, text)
