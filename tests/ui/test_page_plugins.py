"""The Plugins page and plugin names on the Routes page, with NiceGUI's simulated
`User`, against a real gateway that has a plugin installed through entry points."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kairos_client import KairosClient
from kairos_core import PluginCatalog, PluginInfo, load_config
from kairos_ui.pages.plugins import plugin_rows, schema_rows
from kairos_ui.pages.routes import route_row
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

from tests.conftest import RunningGateway
from tests.sample_plugin import DISTRIBUTION, VERSION, installed_plugin_gateway
from tests.support import EchoBackend, raw_request, route

from .conftest import MAIN
from .helpers import element, fill

STAMPED = "/stamped"
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture
async def plugin_gateway(
    backend: EchoBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    """Two routes; ``/stamped`` enables the installed ``stamp`` plugin."""
    stamped = route(
        STAMPED,
        "/s",
        [backend],
        plugins=[{"name": "stamp", "priority": 650, "config": {"value": "v1"}}],
    )
    config = {"version": 1, "routers": [stamped, route("/plain", "/p", [backend])]}
    async with installed_plugin_gateway(config, tmp_path, monkeypatch) as gw:
        yield gw


@pytest.fixture
async def plugin_user(plugin_gateway: RunningGateway, ui_env: Any) -> AsyncIterator[User]:
    ui_env(plugin_gateway.url)
    async with user_simulation(main_file=MAIN) as simulated:
        yield simulated


async def test_plugins_page_lists_builtins_and_installed(plugin_user: User) -> None:
    user = plugin_user
    await user.open("/plugins")
    await user.should_see(marker="plugins-table", retries=40)
    rows = {row["name"]: row for row in element(user, "plugins-table").rows}
    assert list(rows) == [
        "security_headers",
        "cors",
        "body_limit",
        "client_cert",
        "jwt",
        "cache",
        "rate_limit",
        "transform",
        "stamp",
        "ai",
    ]
    assert rows["jwt"]["kind"] == "built in"
    assert rows["jwt"]["phases"] == "on_request, before_upstream"
    assert rows["jwt"]["enabled_on"] == "own settings"
    stamp = rows["stamp"]
    assert stamp["kind"] == "plugin"
    assert stamp["priority"] == 700
    assert stamp["phases"] == "on_response"
    assert stamp["package"] == f"{DISTRIBUTION} {VERSION}"
    assert stamp["enabled_on"] == STAMPED
    settings = element(user, "schema:stamp").rows
    assert settings == [
        {
            "setting": "header",
            "type": "string",
            "default": '"X-Stamp"',
            "description": "The response header to set",
        },
        {
            "setting": "value",
            "type": "string",
            "default": "required",
            "description": "The header's value",
        },
    ]
    await user.should_see("Installed but not loaded")
    await user.should_see("broken: cannot be loaded")


async def test_routes_show_plugins_and_editing_keeps_them(
    plugin_user: User, plugin_gateway: RunningGateway
) -> None:
    user = plugin_user
    await user.open("/routes")
    await user.should_see("plugins: stamp", retries=40)
    assert len(user.find(marker=f"route-plugins:{STAMPED}").elements) == 1
    await user.should_not_see(marker="route-plugins:/plain")
    fill(user, "search", "stamp")
    await user.should_see("1 of 2 routes")

    # The editor has no input for plugins; saving another change keeps them.
    user.find(marker=f"edit:{STAMPED}").click()
    await user.should_see(f"Edit {STAMPED}")
    fill(user, "field:internal_path", "/s2")
    user.find(marker="save").click()
    await user.should_see(f"Saved {STAMPED}", retries=40)
    async with KairosClient(plugin_gateway.url) as client:
        saved = (await client.get_route(STAMPED)).value
    assert saved.internal_path == "/s2"
    assert saved.plugins is not None
    assert [(p.name, p.priority, p.config) for p in saved.plugins] == [
        ("stamp", 650, {"value": "v1"})
    ]
    assert (await raw_request(plugin_gateway.port, STAMPED)).header("X-Stamp") == "v1"


def test_enabled_on_follows_top_level_and_route_entries() -> None:
    config = load_config(
        {
            "version": 1,
            "plugins": [{"name": "everywhere"}, {"name": "mostly"}],
            "routers": [
                route("/a", "/a", [NOWHERE], plugins=[{"name": "mostly", "enabled": False}]),
                route("/b", "/b", [NOWHERE], plugins=[{"name": "here"}]),
                route("/c", "/c", [NOWHERE]),
            ],
        }
    )
    catalog = PluginCatalog(
        plugins=[
            PluginInfo(name=name, builtin=False, priority=800, phases=[])
            for name in ("everywhere", "mostly", "here", "nowhere")
        ]
    )
    rows = {row["name"]: row for row in plugin_rows(catalog, config)}
    assert rows["everywhere"]["enabled_on"] == "every route"
    assert rows["mostly"]["enabled_on"] == "/b, /c"
    assert rows["here"]["enabled_on"] == "/b"
    assert rows["nowhere"]["enabled_on"] == "\u2013"
    assert rows["nowhere"]["phases"] == "\u2013"
    row = route_row(config.routers[0])
    assert row["plugins"] == "mostly (off)"


def test_schema_rows_describe_types_references_and_defaults() -> None:
    schema = {
        "$defs": {"Edits": {"description": "Header edits", "type": "object"}},
        "properties": {
            "keys": {"type": "array", "items": {"type": "string"}, "default": []},
            "env": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "request": {"$ref": "#/$defs/Edits"},
            "mode": {"enum": ["a", "b"], "description": "How"},
            "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["mode"],
    }
    rows = {row["setting"]: row for row in schema_rows(schema)}
    assert rows["keys"]["type"] == "list of string"
    assert rows["keys"]["default"] == "[]"
    assert rows["env"]["type"] == "string | null"
    assert rows["env"]["default"] == "null"
    assert rows["request"]["type"] == "Edits"
    assert rows["request"]["description"] == "Header edits"
    assert rows["request"]["default"] == "\u2013"
    assert (rows["mode"]["type"], rows["mode"]["default"]) == ('"a" | "b"', "required")
    assert rows["labels"]["type"] == "map of integer"
