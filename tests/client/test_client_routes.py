"""Routes through the client against a real in-process gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kairos_client import Conflict, NotFound, PreconditionFailed, ValidationFailed
from kairos_core import Router, load_router

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route

USERS = "/api/users/{id}"
ORDERS = "/orders/{*rest}"
STALE = '"00000000000000000000"'


def config(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes)}


async def test_create_get_list_update_delete(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config())
    async with client_for(gw) as client:
        empty = await client.list_routes()
        created = await client.create_route(load_router(route(USERS, "/users/{id}", [backend])))
        assert isinstance(created.value, Router)
        assert created.value.external_path == USERS
        assert created.etag is not None
        assert created.etag != empty.etag
        assert (await raw_request(gw.port, "/api/users/7")).json()["uri"] == "/users/7"

        fetched = await client.get_route(USERS)
        assert fetched.value == created.value
        assert fetched.etag == created.etag

        listed = await client.list_routes()
        assert listed.value.config_version == 2
        assert [r.external_path for r in listed.value.routes] == [USERS]
        assert listed.etag == created.etag

        moved = fetched.value.model_copy(update={"internal_path": "/v2/users/{id}"})
        updated = await client.update_route(USERS, moved, if_match=fetched.etag)
        assert updated.value.internal_path == "/v2/users/{id}"
        assert updated.etag != fetched.etag
        assert (await raw_request(gw.port, "/api/users/7")).json()["uri"] == "/v2/users/7"

        etag = await client.delete_route(USERS, if_match=updated.etag)
        assert etag is not None
        assert etag not in (created.etag, updated.etag)
        # The same configuration has the same tag: back to no routes, back to the tag.
        assert etag == empty.etag
        with pytest.raises(NotFound) as caught:
            await client.get_route(USERS)
        assert caught.value.status == 404
        assert caught.value.problem.type == "route_not_found"
        assert caught.value.request_id
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    assert json.loads(source.read_text())["routers"] == []


async def test_paths_with_braces_and_stars_are_one_encoded_segment(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(config())
    async with client_for(gw) as client:
        created = await client.create_route(
            route(ORDERS, "/v1/{*rest}", [backend], methods=["GET", "POST"])
        )
        assert created.value.methods == ["GET", "POST"]
        assert (await client.get_route(ORDERS)).value.internal_path == "/v1/{*rest}"
        assert (await raw_request(gw.port, "/orders/a/b")).json()["uri"] == "/v1/a/b"
        with pytest.raises(NotFound):
            await client.get_route("/orders")  # a prefix of the path is another route
        with pytest.raises(NotFound):
            await client.get_route("orders")  # no route is named so
        with pytest.raises(ValueError, match="its id or its external_path"):
            await client.get_route("")


async def test_method_picks_among_routes_sharing_a_path(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        config(
            route(USERS, "/read/{id}", [backend], methods=["GET"]),
            route(USERS, "/write/{id}", [backend], methods=["PUT"]),
        )
    )
    async with client_for(gw) as client:
        with pytest.raises(Conflict) as caught:
            await client.get_route(USERS)
        assert "?method=" in caught.value.detail
        assert (await client.get_route(USERS, method="put")).value.internal_path == "/write/{id}"
        replacement = route(USERS, "/write2/{id}", [backend], methods=["PUT"])
        updated = await client.update_route(USERS, replacement, method="PUT")
        assert updated.value.internal_path == "/write2/{id}"
        await client.delete_route(USERS, method="GET")
        remaining = (await client.list_routes()).value.routes
        assert [r.internal_path for r in remaining] == ["/write2/{id}"]
        with pytest.raises(NotFound):
            await client.delete_route(USERS, method="GET")


async def test_create_conflicts_with_an_existing_route(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(config(route(USERS, "/users/{id}", [backend], methods=["GET"])))
    async with client_for(gw) as client:
        with pytest.raises(Conflict) as caught:
            await client.create_route(route(USERS, "/other/{id}", [backend], methods=["GET"]))
        assert caught.value.status == 409
        assert "exists already" in caught.value.detail


async def test_invalid_route_names_each_field(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config())
    async with client_for(gw) as client:
        with pytest.raises(ValidationFailed) as caught:
            await client.create_route(
                {"external_path": "/x", "internal_path": "/x", "methods": ["GET"], "backendz": []}
            )
        error = caught.value
        assert error.status == 422
        assert {e.path for e in error.errors} == {"backends", "backendz"}
        assert "did you mean 'backends'" in str(error)
        bad_port = route("/y", "/y", ["http://127.0.0.1:99999"])
        with pytest.raises(ValidationFailed) as caught:
            await client.create_route(bad_port)
        assert [e.path for e in caught.value.errors] == ["backends[0].port"]
        assert (await client.list_routes()).value.routes == []


async def test_validate_route_saves_nothing(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(config())
    async with client_for(gw) as client:
        ok = await client.validate_route(load_router(route(USERS, "/users/{id}", [backend])))
        assert ok.valid
        assert ok.errors == []
        reserved = await client.validate_route(route("/health", "/h", [backend]))
        assert not reserved.valid
        assert [e.path for e in reserved.errors] == ["external_path"]
        assert reserved.errors[0].value == "/health"
        assert (await client.list_routes()).value.routes == []


async def test_stale_etag_is_refused(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config(route(USERS, "/users/{id}", [backend])))
    async with client_for(gw) as client:
        current = await client.get_route(USERS)
        for attempt in (
            client.update_route(USERS, current.value, if_match=STALE),
            client.delete_route(USERS, if_match=STALE),
            client.create_route(route("/new", "/new", [backend]), if_match=STALE),
        ):
            with pytest.raises(PreconditionFailed) as caught:
                await attempt
            assert caught.value.status == 412
            assert current.etag is not None
            assert current.etag in caught.value.detail
        assert (await client.list_routes()).etag == current.etag  # nothing changed
        assert await client.delete_route(USERS, if_match="*") is not None
