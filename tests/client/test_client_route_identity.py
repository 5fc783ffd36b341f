"""The SDK addresses routes by name or id, lists by tag, reads secrets in clear."""

from __future__ import annotations

import pytest
from kairos_client import Forbidden, NotFound
from kairos_core import derived_route_id

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, route

ADMIN = "sdk-identity-admin-" + "a" * 20
VIEWER = "sdk-identity-viewer-" + "v" * 20


async def test_routes_by_name_id_and_tag(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {
        "version": 1,
        "routers": [
            route("/users/{id}", "/u/{id}", [backend], methods=["GET"], name="users", tags=["a"]),
            route("/orders", "/o", [backend], methods=["GET"], tags=["a", "b"]),
        ],
    }
    gw = await gateway_factory(config)
    orders = derived_route_id(["GET"], "/orders")
    async with client_for(gw) as client:
        assert (await client.get_route("users")).value.external_path == "/users/{id}"
        fetched = await client.get_route(orders)
        assert fetched.value.id == orders
        listed = (await client.list_routes(tag="b")).value
        assert listed.ids == [orders]
        assert [r.external_path for r in listed.routes] == ["/orders"]
        assert (await client.list_routes()).value.ids == ["users", orders]
        changed = fetched.value.model_copy(update={"internal_path": "/o2"})
        updated = await client.update_route(orders, changed, if_match=fetched.etag)
        assert updated.value.internal_path == "/o2"
        await client.delete_route("users")
        with pytest.raises(NotFound, match="'users'"):
            await client.get_route("users")


async def test_config_secrets_in_clear_need_the_admin_role(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    tokens = [
        {"name": "root", "token": ADMIN, "role": "admin"},
        {"name": "dash", "token": VIEWER, "role": "viewer"},
    ]
    gw = await gateway_factory(
        {"version": 1, "jwt_secret": "k" * 40, "admin": {"tokens": tokens}, "routers": []}
    )
    async with client_for(gw, token=ADMIN) as admin:
        clear = await admin.get_config(secrets="clear")
        assert clear.value.jwt_secret is not None
        assert clear.value.jwt_secret.get_secret_value() == "k" * 40
    async with client_for(gw, token=VIEWER) as viewer:
        redacted = await viewer.get_config()
        assert redacted.value.jwt_secret is not None
        assert redacted.value.jwt_secret.get_secret_value() == "***"
        with pytest.raises(Forbidden):
            await viewer.get_config(secrets="clear")
