"""Plugins (``/plugins``): the policies a route can run, read-only.

The built-in policies and the plugins installed on the gateway (``GET /api/plugins``),
highest priority first, with the routes each installed plugin is enabled on (from the
configuration's ``plugins`` entries), the settings an installed plugin takes (its
config JSON Schema), and the entry points the gateway could not load.
"""

from __future__ import annotations

import json
from typing import Any

from kairos_client import KairosClientError
from kairos_core import GatewayConfig, PluginCatalog
from nicegui import ui

from ..format import DASH
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings

__all__ = ["plugin_rows", "plugin_usage", "register", "schema_rows"]


def _column(name: str, label: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "label": label, "field": name, "align": "left", **extra}


COLUMNS: list[dict[str, Any]] = [
    _column("name", "Name", sortable=True),
    _column("kind", "Kind", sortable=True),
    _column("priority", "Priority", sortable=True),
    _column("phases", "Phases"),
    _column("package", "Package"),
    _column("enabled_on", "Enabled on"),
    _column("description", "Description"),
]
SCHEMA_COLUMNS: list[dict[str, Any]] = [
    _column("setting", "Setting"),
    _column("type", "Type"),
    _column("default", "Default"),
    _column("description", "Description"),
]


def plugin_usage(config: GatewayConfig) -> dict[str, list[str]]:
    """Plugin name -> the routes (external paths) it is enabled on, top-level entries
    and the routes' own merged as the gateway merges them."""
    usage: dict[str, list[str]] = {}
    for index, router in enumerate(config.routers):
        for _, entry in config.plugins_for(index):
            paths = usage.setdefault(entry.name, [])
            if router.external_path not in paths:
                paths.append(router.external_path)
    return usage


def _enabled_on(paths: list[str], routes: int) -> str:
    if not paths:
        return DASH
    if len(paths) == routes:
        return "every route"
    return ", ".join(paths)


def plugin_rows(catalog: PluginCatalog, config: GatewayConfig) -> list[dict[str, Any]]:
    """One table row per policy, with the routes of ``config`` each plugin is on."""
    usage = plugin_usage(config)
    routes = len({router.external_path for router in config.routers})
    rows = []
    for info in catalog.plugins:
        package = DASH
        if info.package is not None:
            package = f"{info.package} {info.version}" if info.version else info.package
        enabled_on = (
            "own settings" if info.builtin else _enabled_on(usage.get(info.name, []), routes)
        )
        rows.append(
            {
                "name": info.name,
                "kind": "built in" if info.builtin else "plugin",
                "priority": info.priority,
                "phases": ", ".join(info.phases) or DASH,
                "package": package,
                "enabled_on": enabled_on,
                "description": info.description,
            }
        )
    return rows


def _definition(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    found = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return found if isinstance(found, dict) else {}


def _type_text(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " | ".join(_type_text(p) for p in prop[key])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    kind = prop.get("type")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"list of {_type_text(prop['items'])}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {_type_text(prop['additionalProperties'])}"
    if isinstance(kind, list):
        return " | ".join(map(str, kind))
    return str(kind) if kind else "any"


def schema_rows(schema: dict[str, Any]) -> list[dict[str, str]]:
    """One row per top-level setting of a plugin's config JSON Schema: its name, type,
    default (or "required") and description."""
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        if not isinstance(prop, dict):
            continue
        described = prop.get("description") or _definition(schema, prop.get("$ref", "")).get(
            "description", ""
        )
        if name in required:
            default = "required"
        elif "default" in prop:
            default = json.dumps(prop["default"])
        else:
            default = DASH
        rows.append(
            {
                "setting": name,
                "type": _type_text(prop),
                "default": default,
                "description": str(described),
            }
        )
    return rows


def _render(catalog: PluginCatalog, config: GatewayConfig) -> None:
    if catalog.errors:
        with (
            ui.card().classes("w-full bg-amber-100 text-amber-950 gap-1").mark("plugin-errors"),
            ui.row().classes("items-start gap-2 no-wrap"),
        ):
            ui.icon("warning", color="warning")
            with ui.column().classes("gap-0"):
                ui.label("Installed but not loaded (a config that enables them is refused):")
                for name, reason in catalog.errors.items():
                    ui.label(f"{name}: {reason}").classes("font-mono text-sm")
    rows = plugin_rows(catalog, config)
    table = ui.table(columns=COLUMNS, rows=rows, row_key="name").classes("w-full")
    table.props("flat bordered").mark("plugins-table")
    for info in catalog.plugins:
        if info.builtin or info.config_schema is None:
            continue
        settings = schema_rows(info.config_schema)
        with ui.expansion(f"{info.name}: settings", icon="tune").classes("w-full"):
            title = info.config_schema.get("description")
            if isinstance(title, str) and title:
                ui.label(title).classes("text-sm opacity-70")
            settings_table = ui.table(columns=SCHEMA_COLUMNS, rows=settings, row_key="setting")
            settings_table.props("flat dense bordered no-data-label='No settings'")
            settings_table.classes("w-full").mark(f"schema:{info.name}")


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/plugins", title="Kairos · plugins")
    def plugins_page() -> None:
        loaded = False
        with frame(settings, "/plugins") as banner:
            with ui.row().classes("w-full items-center gap-3"):
                ui.label("Plugins").classes("text-2xl font-semibold")
                ui.space()
                ui.button("Refresh", icon="refresh", on_click=lambda: refresh()).props("flat").mark(
                    "refresh"
                )
            ui.label(
                "Built-in policies are configured by their own settings (Configuration, "
                "and each route). Installed plugins are enabled by plugins entries: at the "
                "top level for every route, or on a route. Higher priority runs first."
            ).classes("text-sm opacity-70")
            box = ui.column().classes("w-full gap-3")

        async def refresh() -> None:
            nonlocal loaded
            client = gateway.client
            try:
                catalog = await client.plugins()
                config = (await client.get_config()).value
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            loaded = True
            box.clear()
            with box:
                _render(catalog, config)

        async def poll() -> None:
            # The catalog changes only when the gateway restarts: poll until it loads.
            if not loaded:
                await refresh()

        ui.timer(settings.poll_interval_s, poll, immediate=True)
