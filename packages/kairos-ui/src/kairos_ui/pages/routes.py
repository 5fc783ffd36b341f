"""Routes (``/routes``): the route table (search, sort, pages, selection), the add/edit
dialog (`route_editor`), delete and bulk delete behind a confirmation, 412 handling.

Only the rows of the current page are built, so a gateway with hundreds of routes
opens as fast as one with ten; searching, sorting and paging work on the route list
the page fetched (`route_table`), without asking the gateway again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from kairos_client import KairosClientError, PreconditionFailed
from kairos_core import Router
from nicegui import ui

from .. import live
from ..gateway import Gateway, describe, is_outage
from ..layout import Banner, frame
from ..route_table import (
    COLUMNS,
    PAGE_SIZES,
    page_of,
    route_key,
    route_row,
    route_tags,
    select,
)
from ..settings import UiSettings
from .route_editor import RouteEditor, RoutesState

__all__ = ["register", "route_row"]

#: Grid columns: selection, the `COLUMNS`, actions.
GRID = "auto minmax(9rem,2fr) auto minmax(9rem,2fr) auto auto auto auto"
SEARCH_HINT = (
    "Words match anywhere; narrow with path:, name:, tag:, backend:, method: "
    "(e.g. tag:billing method:post)"
)
#: Paths listed by name in the bulk-delete confirmation; the rest are counted.
LISTED = 8


class _View:
    """What the table shows: search, sort, page and the selected routes."""

    def __init__(self) -> None:
        self.sort = "path"
        self.descending = False
        self.page = 1
        self.size = PAGE_SIZES[0]
        self.selected: set[str] = set()


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/routes", title="Kairos · routes")
    def routes_page() -> None:
        state = RoutesState()
        view = _View()
        can_change = gateway.allows("operator")  # a viewer sees no add, edit or delete
        with frame(settings, "/routes") as banner:
            with ui.row().classes("w-full items-center gap-3"):
                ui.label("Routes").classes("text-2xl font-semibold")
                ui.space()
                search = (
                    ui.input(placeholder="Search: path, name, tag:, backend:, method:")
                    .props('clearable dense outlined debounce=250 data-testid="search"')
                    .classes("w-96")
                    .tooltip(SEARCH_HINT)
                    .mark("search")
                )
                ui.button("Refresh", icon="refresh", on_click=lambda: load()).props("flat").mark(
                    "refresh"
                )
                if can_change:
                    ui.button("Add route", icon="add", on_click=lambda: editor.open(None)).mark(
                        "add-route"
                    )
            with ui.row().classes("w-full items-center gap-3"):
                count = ui.label("").classes("text-sm opacity-70").mark("route-count")
                count.props('data-testid="route-count"')
                ui.space()
                select_all = ui.button("Select all matching", on_click=lambda: pick_all(True))
                select_all.props('flat no-caps data-testid="select-all"').mark("select-all")
                clear = ui.button("Clear selection", on_click=lambda: pick_all(False))
                clear.props('flat no-caps data-testid="clear-selection"').mark("clear-selection")
                bulk = ui.button("Delete selected", icon="delete_sweep", on_click=lambda: ask())
                bulk.props('color=negative outline data-testid="bulk-delete"').mark("bulk-delete")
                select_all.visible = bulk.visible = can_change
            with ui.card().classes("w-full p-0"):
                table_box = ui.column().classes("w-full p-3")
            with ui.row().classes("w-full items-center gap-3"):
                shown_label = ui.label("").classes("text-xs opacity-60").mark("page-info")
                shown_label.props('data-testid="page-info"')
                ui.space()
                sizes = ui.select(list(PAGE_SIZES), value=view.size, label="Rows per page")
                sizes.props("dense outlined").classes("w-32").mark("page-size")
                pager = ui.pagination(1, 1, direction_links=True).mark("pager")
                pager.props('data-testid="pager" max-pages=7 boundary-numbers')

        stale_dialog = _stale_dialog(lambda: load(), lambda: editor.dialog.close())
        editor: RouteEditor = RouteEditor(gateway, state, lambda: load(), stale_dialog)

        def matching() -> list[Router]:
            return select(state.routes, search.value, view.sort, view.descending)

        def render() -> None:
            found = matching()
            rows, view.page, pages = page_of(found, view.page, view.size)
            keys = {route_key(r) for r in state.routes}
            view.selected &= keys  # routes gone since: no longer selected
            count.text = f"{len(found)} of {len(state.routes)} routes"
            first = (view.page - 1) * view.size
            shown_label.text = (
                f"showing {first + 1}-{first + len(rows)} of {len(found)}" if rows else ""
            )
            pager.max = pages
            pager.value = view.page
            pager.update()
            pager.visible = pages > 1
            select_all.text = f"Select all {len(found)} matching"
            select_all.enabled = bool(found)
            show_selection()
            table_box.clear()
            with table_box, ui.grid(columns=GRID).classes("w-full items-center gap-x-4 gap-y-2"):
                ui.label("")
                for key, header in COLUMNS:
                    if key != "path":
                        _header(key, header)
                        continue
                    with ui.row().classes("gap-0 no-wrap"):  # names sit under the paths
                        _header("path", header)
                        _header("name", "Name")
                ui.label("")
                for route in rows:
                    _row(route)

        def _header(key: str, header: str) -> None:
            button = ui.button(header, on_click=lambda k=key: sort_by(k))
            button.props(f'flat dense no-caps size=sm data-testid="sort:{key}"')
            if view.sort == key:
                arrow = "arrow_downward" if view.descending else "arrow_upward"
                button.props(f"icon-right={arrow}")
            button.classes("justify-start opacity-80 uppercase text-xs").mark(f"sort:{key}")

        def _row(route: Router) -> None:
            key = route_key(route)
            row = route_row(route)
            if can_change:
                ui.checkbox(
                    value=key in view.selected, on_change=lambda e, k=key: pick(k, e.value)
                ).props(f'dense data-testid="select:{key}"').mark(f"select:{key}")
            else:
                ui.label("")  # the selection column stays in the grid
            with ui.column().classes("gap-0 min-w-0"):
                path = ui.label(row["path"]).classes("font-mono break-all").mark("route-path")
                path.props('data-testid="route-path"')
                if row["name"]:
                    ui.label(row["name"]).classes("text-sm font-semibold").mark("route-name")
                if route.external_path in state.down:
                    ui.label("no backend in rotation: 503").classes(
                        "text-xs text-negative font-semibold"
                    ).mark(f"route-down:{route.external_path}")
                ui.label(f"→ {row['internal']}").classes("font-mono text-xs opacity-70 break-all")
                if tags := route_tags(route):
                    with ui.row().classes("gap-1"):
                        for tag in tags:
                            ui.badge(tag, color="grey-6").props("outline").classes("text-xs")
                if row["plugins"]:
                    ui.label(f"plugins: {row['plugins']}").classes("text-xs opacity-70").mark(
                        f"route-plugins:{route.external_path}"
                    )
            ui.label(row["methods"]).classes("text-sm")
            ui.label(row["backends"]).classes("text-sm font-mono whitespace-pre-line break-all")
            ui.label(row["strategy"]).classes("text-sm")
            ui.label(row["auth"]).classes("text-sm")
            ui.label(row["rate_limit"]).classes("text-sm")
            with ui.row().classes("gap-0 no-wrap"):
                if not can_change:
                    return
                ui.button(icon="edit", on_click=lambda r=route: editor.open(r)).props(
                    f'flat round dense data-testid="edit:{route.external_path}"'
                ).mark(f"edit:{route.external_path}")
                ui.button(icon="delete", on_click=lambda r=route: confirm_delete(r)).props(
                    "flat round dense color=negative"
                ).mark(f"delete:{route.external_path}")

        def sort_by(key: str) -> None:
            view.descending = not view.descending if view.sort == key else False
            view.sort = key
            render()

        def pick(key: str, value: bool) -> None:
            if value:
                view.selected.add(key)
            else:
                view.selected.discard(key)
            show_selection()

        def show_selection() -> None:
            bulk.text = f"Delete selected ({len(view.selected)})"
            bulk.enabled = bool(view.selected)
            clear.visible = bool(view.selected)

        def pick_all(on: bool) -> None:
            """Select (or unselect) every route the search finds, on every page."""
            keys = {route_key(r) for r in matching()}
            view.selected = view.selected | keys if on else set()
            render()

        def go_to() -> None:
            if int(pager.value or 1) != view.page:
                view.page = int(pager.value or 1)
                render()

        def resize() -> None:
            view.size = int(sizes.value or PAGE_SIZES[0])
            view.page = 1
            render()

        def searched() -> None:
            view.page = 1
            render()

        search.on_value_change(searched)
        pager.on_value_change(go_to)
        sizes.on_value_change(resize)

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
                        await delete_routes([route])

                    ui.button("Delete", on_click=delete).props("color=negative").mark(
                        "confirm-delete"
                    )
            dialog.open()

        with ui.dialog() as bulk_dialog, ui.card().classes("max-w-xl"):
            bulk_title = ui.label("").classes("text-lg font-semibold")
            ui.label("They stop serving at once.")
            bulk_list = ui.column().classes("gap-0 font-mono text-sm")
            with ui.row().classes("w-full justify-end"):
                cancel = ui.button("Cancel", on_click=bulk_dialog.close).props("flat")
                cancel.mark("cancel-bulk-delete").props('data-testid="cancel-bulk-delete"')
                confirm = ui.button("", on_click=lambda: bulk_dialog.submit(True))
                confirm.props('color=negative data-testid="confirm-bulk-delete"')
                confirm.mark("confirm-bulk-delete")

        async def ask() -> None:
            chosen = [r for r in state.routes if route_key(r) in view.selected]
            if not chosen:
                return
            bulk_title.text = f"Delete {len(chosen)} routes?"
            confirm.text = f"Delete {len(chosen)} routes"
            bulk_list.clear()
            with bulk_list:
                for route in chosen[:LISTED]:
                    ui.label(f"{' '.join(route.methods)} {route.external_path}")
                if len(chosen) > LISTED:
                    ui.label(f"… and {len(chosen) - LISTED} more").classes("opacity-70")
            if await bulk_dialog:
                await delete_routes(chosen)

        async def delete_routes(chosen: Sequence[Router]) -> None:
            """One route: ``DELETE /api/routes/{path}``. Several: one replacement of the
            whole configuration without them, so they go in one change (one version,
            one audit entry) or, if anything is refused, not at all. Either way sent
            with the ETag this page loaded, so a change made meanwhile is not undone."""
            client = gateway.client
            try:
                if len(chosen) == 1:
                    only = chosen[0]
                    await client.delete_route(
                        only.external_path, method=only.methods[0], if_match=state.etag
                    )
                else:
                    current = (await client.get_config()).value
                    doomed = {route_key(r) for r in chosen}
                    kept = [r for r in current.routers if route_key(r) not in doomed]
                    await client.replace_config(
                        current.model_copy(update={"routers": kept}), if_match=state.etag
                    )
            except PreconditionFailed:
                stale_dialog("The configuration changed since this page loaded it.")
                return
            except KairosClientError as exc:
                ui.notify(describe(exc, gateway.url), type="negative")
                return
            view.selected -= {route_key(r) for r in chosen}
            what = chosen[0].external_path if len(chosen) == 1 else f"{len(chosen)} routes"
            ui.notify(f"Deleted {what}", type="positive")
            await load()

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
