"""`KairosClient.plugins()` against a real gateway: built-in policies, a plugin
installed through entry points, and an entry point that fails to load."""

from __future__ import annotations

from pathlib import Path

import pytest
from kairos_client import Unauthorized, ValidationFailed
from kairos_core import PluginCatalog

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.sample_plugin import DISTRIBUTION, VERSION, installed_plugin_gateway
from tests.support import EchoBackend, raw_request, route

BUILTINS = ["security_headers", "cors", "body_limit", "client_cert", "jwt", "rate_limit"]
TOKEN = "client-admin-token-" + "p" * 24


async def test_builtins(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        catalog = await client.plugins()
    assert isinstance(catalog, PluginCatalog)
    # Plugins installed in this environment may be listed too; the built-ins always are.
    builtins = [p for p in catalog.plugins if p.builtin]
    assert [p.name for p in builtins] == BUILTINS  # highest priority first
    assert all(p.package is None and p.config_schema is None for p in builtins)
    jwt = next(p for p in builtins if p.name == "jwt")
    assert (jwt.priority, jwt.phases) == (1450, ["on_request", "before_upstream"])
    assert jwt.description
    priorities = [p.priority for p in catalog.plugins]
    assert priorities == sorted(priorities, reverse=True)


async def test_installed_plugin_and_load_errors(
    backend: EchoBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "version": 1,
        "routers": [
            {
                **route("/a", "/a", [backend]),
                "plugins": [{"name": "stamp", "config": {"value": "v"}}],
            }
        ],
    }
    async with (
        installed_plugin_gateway(config, tmp_path, monkeypatch) as gw,
        client_for(gw) as client,
    ):
        catalog = await client.plugins()
        assert (await raw_request(gw.port, "/a")).header("X-Stamp") == "v"
    names = [p.name for p in catalog.plugins]
    # Bundled plugins sit among the built-ins by priority (cache: 1000, transform: 800,
    # ai: 500).
    assert names == [*BUILTINS[:5], "cache", "rate_limit", "transform", "stamp", "ai"]
    stamp = catalog.plugins[-2]
    assert not stamp.builtin
    assert stamp.priority == 700
    assert stamp.phases == ["on_response"]
    assert (stamp.package, stamp.version) == (DISTRIBUTION, VERSION)
    assert stamp.description == "stamps every response with a header"
    assert stamp.config_schema is not None
    assert set(stamp.config_schema["properties"]) == {"header", "value"}
    assert stamp.config_schema["required"] == ["value"]
    assert list(catalog.errors) == ["broken"]
    assert "cannot be loaded" in catalog.errors["broken"]


async def test_needs_the_admin_token(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []}, admin_token=TOKEN)
    async with client_for(gw) as client:
        with pytest.raises(Unauthorized):
            await client.plugins()
    async with client_for(gw, token=TOKEN) as client:
        catalog = await client.plugins()
    assert {p.name for p in catalog.plugins} >= set(BUILTINS)


async def test_the_path_is_reserved(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    # A catch-all route does not capture the endpoint, and no route may claim it.
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/api/{*rest}", "/{*rest}", [backend])]}
    )
    async with client_for(gw) as client:
        assert {p.name for p in (await client.plugins()).plugins} >= set(BUILTINS)
        with pytest.raises(ValidationFailed) as refused:
            await client.create_route(route("/api/plugins", "/p", [backend]))
    assert "served by the gateway itself" in refused.value.errors[0].message
    assert backend.requests == []
