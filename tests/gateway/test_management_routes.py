"""Route management through the API: live at once, saved atomically, concurrency-safe."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from kairos_core import derived_route_id, load_config

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, RawResponse, api_call, raw_request, route

USERS = "/api/users/{id}"
USERS_URL = "/api/routes/%2Fapi%2Fusers%2F%7Bid%7D"


async def call(
    gw: RunningGateway,
    method: str,
    target: str,
    body: Any = None,
    *,
    headers: list[tuple[str, str]] | None = None,
) -> RawResponse:
    return await api_call(gw.port, method, target, body, headers=headers)


def on_disk(gw: RunningGateway) -> dict[str, Any]:
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    data: dict[str, Any] = json.loads(source.read_text())
    return data


def config(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes)}


async def test_create_is_live_at_once_and_delete_too(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config())
    assert (await raw_request(gw.port, "/api/users/7")).status == 404
    resp = await call(gw, "POST", "/api/routes", route(USERS, "/users/{id}", [backend]))
    assert resp.status == 201, resp.body
    # Location names the route by its id (unnamed: derived from methods and path).
    every = ["GET", "HEAD", "POST", "PUT", "DELETE"]
    assert resp.header("Location") == "/api/routes/" + derived_route_id(every, USERS)
    assert resp.json()["external_path"] == USERS
    proxied = await raw_request(gw.port, "/api/users/7")
    assert proxied.status == 200
    assert proxied.json()["uri"] == "/users/7"
    assert [r["external_path"] for r in on_disk(gw)["routers"]] == [USERS]

    resp = await call(gw, "DELETE", USERS_URL)
    assert resp.status == 204
    assert (await raw_request(gw.port, "/api/users/7")).status == 404
    assert on_disk(gw)["routers"] == []
    assert (await call(gw, "DELETE", USERS_URL)).status == 404


async def test_get_list_and_one_with_percent_encoded_path(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(
        config(route(USERS, "/users/{id}", [backend]), route("/a", "/a", [backend]))
    )
    listed = await call(gw, "GET", "/api/routes")
    assert listed.status == 200
    assert [r["external_path"] for r in listed.json()["routes"]] == [USERS, "/a"]
    assert listed.json()["config_version"] == gw.gateway.runtime.snapshot.generation
    one = await call(gw, "GET", USERS_URL)
    assert one.status == 200
    assert one.json()["internal_path"] == "/users/{id}"
    assert one.header("ETag") == listed.header("ETag")
    assert (await call(gw, "GET", "/api/routes/%2Fnope")).status == 404


async def test_several_routes_on_one_path_are_picked_by_method(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(
        config(
            route("/x", "/get", [backend], methods=["GET"]),
            route("/x", "/post", [backend], methods=["POST"]),
        )
    )
    assert (await call(gw, "GET", "/api/routes/%2Fx")).status == 409
    resp = await call(gw, "GET", "/api/routes/%2Fx?method=post")
    assert resp.json()["internal_path"] == "/post"
    assert (await call(gw, "DELETE", "/api/routes/%2Fx?method=GET")).status == 204
    assert (await raw_request(gw.port, "/x")).status == 405


async def test_post_conflict_invalid_and_unknown_fields(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(route("/a", "/a", [backend])))
    before = on_disk(gw)
    dup = await call(gw, "POST", "/api/routes", route("/a", "/b", [backend], methods=["GET"]))
    assert dup.status == 409
    assert dup.header("Content-Type") == "application/problem+json"

    bad = await call(
        gw, "POST", "/api/routes", {**route("/b", "/b", [backend]), "methodz": ["GET"]}
    )
    assert bad.status == 422
    paths = [e["path"] for e in bad.json()["errors"]]
    assert "methodz" in paths
    invalid = await call(
        gw, "POST", "/api/routes", route("/health", "/h", [backend], methods=["GET"])
    )
    assert invalid.status == 422
    assert invalid.json()["errors"][0]["path"] == "external_path"
    port = await call(
        gw,
        "POST",
        "/api/routes",
        {**route("/c", "/c", [backend]), "backends": [{"host": "http://h", "port": 70000}]},
    )
    assert port.status == 422
    assert port.json()["errors"][0]["path"] == "backends[0].port"
    assert on_disk(gw) == before


async def test_put_replaces_and_404_when_missing(
    backend_factory: Any, file_gateway_factory: GatewayFactory
) -> None:
    one, two = await backend_factory("one"), await backend_factory("two")
    gw = await file_gateway_factory(config(route("/svc", "/svc", [one])))
    resp = await call(gw, "PUT", "/api/routes/%2Fsvc", route("/svc", "/v2", [two]))
    assert resp.status == 200, resp.body
    proxied = await raw_request(gw.port, "/svc")
    assert proxied.header("X-Backend") == "two"
    assert proxied.json()["uri"] == "/v2"
    missing = await call(gw, "PUT", "/api/routes/%2Fnope", route("/nope", "/n", [two]))
    assert missing.status == 404


async def test_validate_always_answers_200(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(route("/a", "/a", [backend])))
    good = await call(gw, "POST", "/api/routes/validate", route("/b", "/b", [backend]))
    assert good.status == 200
    assert good.json() == {"valid": True, "errors": []}
    bad = await call(
        gw, "POST", "/api/routes/validate", {**route("/b", "/{x}", [backend]), "extra": 1}
    )
    assert bad.status == 200
    assert bad.json()["valid"] is False
    assert {e["path"] for e in bad.json()["errors"]} >= {"extra"}
    taken = await call(gw, "POST", "/api/routes/validate", route("/a", "/a", [backend]))
    assert taken.json()["valid"] is False
    assert taken.json()["errors"][0]["path"] == "external_path"
    broken = await raw_request(
        gw.port,
        "/api/routes/validate",
        method="POST",
        body=b"{nope",
        headers=[("Content-Type", "application/json")],
    )
    assert broken.status == 200
    assert broken.json()["valid"] is False
    assert on_disk(gw)["routers"][0]["external_path"] == "/a"
    assert len(on_disk(gw)["routers"]) == 1


async def test_etag_and_if_match(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config())
    tag = (await call(gw, "GET", "/api/routes")).header("ETag")
    assert tag is not None
    # A hash of the configuration: the same in every worker and across restarts.
    assert re.fullmatch(r'"[0-9a-f]{20}"', tag)
    first = await call(
        gw, "POST", "/api/routes", route("/a", "/a", [backend]), headers=[("If-Match", tag)]
    )
    assert first.status == 201
    assert first.header("ETag") not in (None, tag)
    stale = await call(
        gw, "POST", "/api/routes", route("/b", "/b", [backend]), headers=[("If-Match", tag)]
    )
    assert stale.status == 412
    assert (await raw_request(gw.port, "/b")).status == 404
    star = await call(
        gw, "POST", "/api/routes", route("/b", "/b", [backend]), headers=[("If-Match", "*")]
    )
    assert star.status == 201


async def test_mutation_refused_when_file_changed_on_disk(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory({**config(), "hot_reload": False})
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    edited = {**config(route("/hand", "/hand", [backend])), "hot_reload": False}
    source.write_text(json.dumps(edited))
    resp = await call(gw, "POST", "/api/routes", route("/a", "/a", [backend]))
    assert resp.status == 409
    assert "changed on disk" in resp.json()["detail"]
    assert json.loads(source.read_text()) == edited  # the hand edit survives
    status = (await call(gw, "GET", "/api/config/status")).json()
    assert status["file_changed_on_disk"] is True
    assert (await call(gw, "POST", "/api/config/reload")).status == 200
    assert (await raw_request(gw.port, "/hand")).status == 200
    assert (await call(gw, "POST", "/api/routes", route("/a", "/a", [backend]))).status == 201


async def test_change_not_applied_when_it_cannot_be_saved(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await file_gateway_factory(config())
    before = (await call(gw, "GET", "/api/config/status")).json()
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    text = source.read_text()

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    resp = await call(gw, "POST", "/api/routes", route("/a", "/a", [backend]))
    assert resp.status == 503
    assert resp.json()["type"] == "not_persisted"
    assert (await raw_request(gw.port, "/a")).status == 404
    assert source.read_text() == text
    assert [p.name for p in source.parent.iterdir()] == ["config.json"]  # no temp left
    monkeypatch.undo()
    after = (await call(gw, "GET", "/api/config/status")).json()
    assert after["config_version"] == before["config_version"]
    assert (await call(gw, "POST", "/api/routes", route("/a", "/a", [backend]))).status == 201


async def test_saved_file_keeps_a_legacy_route_as_written_and_loads_back(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    legacy = {
        "version": 1,
        "routers": [
            {
                "external_path": "/old",
                "internal_path": "/old",
                "methods": ["get"],
                "host": backend.url.rsplit(":", 1)[0],
                "port": backend.port,
            }
        ],
    }
    gw = await file_gateway_factory(legacy)
    assert (await call(gw, "POST", "/api/routes", route("/new", "/new", [backend]))).status == 201
    saved = on_disk(gw)
    assert saved["routers"][0] == legacy["routers"][0]  # the kairos-rs form, as written
    assert load_config(saved).routers[0].backends[0].port == backend.port
