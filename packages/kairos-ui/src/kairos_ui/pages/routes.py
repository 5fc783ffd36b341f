"""Routes (``/routes``): a searchable table, the add/edit dialog (`route_editor`),
delete with confirmation, and 412 handling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kairos_client import (
    KairosClientError,
    PreconditionFailed,
)
from kairos_core import Router
from nicegui import ui

from .. import live
from ..gateway import Gateway, describe, is_outage
from ..layout import Banner, frame
from ..settings import UiSettings
from .route_editor import RouteEditor, RoutesState

__all__ = ["matches", "register", "route_row"]

HEADERS = ("Path", "Methods", "Backends", "Strategy", "Auth", "Rate limit", "")


def _limit_text(route: Router) -> str:
    if route.opts_out_of("rate_limit"):
        return "off"
    limit = route.rate_limit
    if limit is None:
        return "gateway-wide"
    if limit.requests_per_second is not None:
        return f"{limit.requests_per_second:g}/s per {limit.key}"
    return f"{limit.requests_per_window} per {limit.window_seconds:g} s per {limit.key}"


def _plugins_text(route: Router) -> str:
    """The route's own plugin entries by name; ``(off)``: turned off on this route."""
    return ", ".join(
        entry.name if entry.enabled else f"{entry.name} (off)" for entry in route.plugins or ()
    )


def route_row(route: Router) -> dict[str, str]:
    """The table's text for one route."""
    return {
        "path": route.external_path,
        "internal": route.internal_path,
        "methods": " ".join(route.methods),
        "backends": "\n".join(
            f"{b.address} (weight {b.weight})" if b.weight != 1 else b.address
            for b in route.backends
        ),
        "strategy": route.load_balancing_strategy.replace("_", " "),
        "auth": "JWT" if route.auth_required else "none",
        "rate_limit": _limit_text(route),
        "plugins": _plugins_text(route),
    }


def matches(route: Router, query: str) -> bool:
    """Does the search ``query`` (words, all must match) find ``route``?"""
    row = route_row(route)
    haystack = " ".join(row.values()).lower()
    return all(word in haystack for word in query.lower().split())


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/routes", title="Kairos · routes")
    def routes_page() -> None:
        state = RoutesState()
        can_change = gateway.allows("operator")  # a viewer sees no add, edit or delete
        with frame(settings, "/routes") as banner:
            with ui.row().classes("w-full items-center gap-3"):
                ui.label("Routes").classes("text-2xl font-semibold")
                ui.space()
                search = (
                    ui.input(placeholder="Search path, backend, method…")
                    .props("clearable dense outlined")
                    .classes("w-72")
                    .mark("search")
                )
                ui.button("Refresh", icon="refresh", on_click=lambda: load()).props("flat").mark(
                    "refresh"
                )
                if can_change:
                    ui.button("Add route", icon="add", on_click=lambda: editor.open(None)).mark(
                        "add-route"
                    )
            with ui.card().classes("w-full p-0"):
                table_box = ui.column().classes("w-full p-3")
            count = ui.label("").classes("text-xs opacity-60").mark("route-count")

        stale_dialog = _stale_dialog(lambda: load(), lambda: editor.dialog.close())
        editor: RouteEditor = RouteEditor(gateway, state, lambda: load(), stale_dialog)

        def render() -> None:
            query = search.value or ""
            shown = [r for r in state.routes if matches(r, query)]
            count.text = f"{len(shown)} of {len(state.routes)} routes"
            table_box.clear()
            with (
                table_box,
                ui.grid(
                    columns="minmax(9rem,2fr) auto minmax(9rem,2fr) auto auto auto auto"
                ).classes("w-full items-center gap-x-4 gap-y-2"),
            ):
                for header in HEADERS:
                    ui.label(header).classes("text-xs uppercase opacity-70")
                for route in shown:
                    row = route_row(route)
                    with ui.column().classes("gap-0"):
                        ui.label(row["path"]).classes("font-mono").mark("route-path")
                        if route.external_path in state.down:
                            ui.label("no backend in rotation: 503").classes(
                                "text-xs text-negative font-semibold"
                            ).mark(f"route-down:{route.external_path}")
                        ui.label(f"→ {row['internal']}").classes("font-mono text-xs opacity-70")
                        if row["plugins"]:
                            ui.label(f"plugins: {row['plugins']}").classes(
                                "text-xs opacity-70"
                            ).mark(f"route-plugins:{route.external_path}")
                    ui.label(row["methods"]).classes("text-sm")
                    ui.label(row["backends"]).classes("text-sm font-mono whitespace-pre-line")
                    ui.label(row["strategy"]).classes("text-sm")
                    ui.label(row["auth"]).classes("text-sm")
                    ui.label(row["rate_limit"]).classes("text-sm")
                    with ui.row().classes("gap-0 no-wrap"):
                        if not can_change:
                            continue
                        ui.button(icon="edit", on_click=lambda r=route: editor.open(r)).props(
                            "flat round dense"
                        ).mark(f"edit:{route.external_path}")
                        ui.button(icon="delete", on_click=lambda r=route: confirm_delete(r)).props(
                            "flat round dense color=negative"
                        ).mark(f"delete:{route.external_path}")

        search.on_value_change(render)

        async def load() -> None:
            try:
                listing = await gateway.client.list_routes()
            except KairosClientError as exc:
                _report(banner, gateway, exc)
                return
            banner.clear()
            state.routes = listing.value.routes
            state.etag = listing.etag
            try:
                state.down = frozenset((await gateway.client.backends()).routes_down)
            except KairosClientError:
                state.down = frozenset()  # the routes are still worth showing
            render()

        def confirm_delete(route: Router) -> None:
            with ui.dialog() as dialog, ui.card():
                ui.label(f"Delete the route {route.external_path}?").classes("font-semibold")
                ui.label(f"{' '.join(route.methods)} → {route.internal_path}. Live at once.")
                with ui.row().classes("w-full justify-end"):
                    ui.button("Cancel", on_click=dialog.close).props("flat").mark("cancel-delete")

                    async def delete() -> None:
                        dialog.close()
                        try:
                            await gateway.client.delete_route(
                                route.external_path,
                                method=route.methods[0],
                                if_match=state.etag,
                            )
                        except PreconditionFailed:
                            stale_dialog("The configuration changed since this page loaded it.")
                            return
                        except KairosClientError as exc:
                            ui.notify(describe(exc, gateway.url), type="negative")
                            return
                        ui.notify(f"Deleted {route.external_path}", type="positive")
                        await load()

                    ui.button("Delete", on_click=delete).props("color=negative").mark(
                        "confirm-delete"
                    )
            dialog.open()

        ui.timer(0, load, once=True)
        live.follow(gateway, on_config=load, on_backend=load)


def _report(banner: Banner, gateway: Gateway, exc: KairosClientError) -> None:
    if is_outage(exc):
        banner.show(describe(exc, gateway.url))
    else:
        ui.notify(describe(exc, gateway.url), type="negative")


def _stale_dialog(
    reload: Callable[[], Awaitable[None]], close_editor: Callable[[], object]
) -> Callable[[str], None]:
    """The "someone else changed it" (412) prompt; returns the function that opens it."""
    with ui.dialog() as dialog, ui.card():
        ui.label("The configuration changed").classes("text-lg font-semibold")
        message = ui.label("")
        ui.label("Reload to see the current routes, then make your change again.")
        with ui.row().classes("w-full justify-end"):
            ui.button("Cancel", on_click=dialog.close).props("flat")

            async def do_reload() -> None:
                dialog.close()
                close_editor()
                await reload()

            ui.button("Reload", icon="refresh", on_click=do_reload).mark("reload-stale")

    def show(text: str) -> None:
        message.text = text
        dialog.open()

    return show
