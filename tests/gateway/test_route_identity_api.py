"""Routes addressed by name or derived id through the management API; ``?tag=``;
``GET /api/config?secrets=clear``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kairos_core import derived_route_id, load_config
from kairos_gateway.management.live import redacted_data, restore_secrets, revealed_data

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import api_call, raw_request

ADMIN = "identity-admin-token-" + "a" * 16
VIEWER = "identity-viewer-token-" + "v" * 16


def _route(path: str, internal: str = "/x", **extra: Any) -> dict[str, Any]:
    return {
        "external_path": path,
        "internal_path": internal,
        "methods": extra.pop("methods", ["GET"]),
        "backends": [{"host": "http://127.0.0.1", "port": 9}],
        **extra,
    }


def _config() -> dict[str, Any]:
    return {
        "version": 1,
        "hot_reload": False,
        "routers": [
            _route("/users/{id}", name="users", tags=["team-a", "public"]),
            _route("/orders", methods=["GET", "POST"], tags=["team-a"]),
            _route("/static/{*path}"),
        ],
    }


async def test_get_put_delete_by_name_and_by_derived_id(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await file_gateway_factory(_config())
    got = await api_call(gw.port, "GET", "/api/routes/users")
    assert got.status == 200
    assert got.json()["external_path"] == "/users/{id}"
    orders = derived_route_id(["GET", "POST"], "/orders")
    assert (await api_call(gw.port, "GET", f"/api/routes/{orders}")).json()["internal_path"] == "/x"
    by_path = await api_call(gw.port, "GET", "/api/routes/%2Forders")
    assert by_path.json() == (await api_call(gw.port, "GET", f"/api/routes/{orders}")).json()
    assert (await api_call(gw.port, "GET", f"/api/routes/{orders}?method=POST")).status == 200
    not_served = await api_call(gw.port, "GET", f"/api/routes/{orders}?method=DELETE")
    assert not_served.status == 404
    assert "does not serve DELETE" in not_served.json()["detail"]
    missing = await api_call(gw.port, "GET", "/api/routes/nobody")
    assert missing.status == 404
    assert "no route with the name or id 'nobody'" in missing.json()["detail"]

    moved = _route("/people/{id}", "/p/{id}", name="users", tags=["team-a"])
    put = await api_call(gw.port, "PUT", "/api/routes/users", moved)
    assert put.status == 200, put.body
    assert put.header("Location") == "/api/routes/users"
    assert (await raw_request(gw.port, "/users/1")).status == 404
    saved = json.loads((tmp_path / "config.json").read_text())["routers"][0]
    assert saved["name"] == "users"
    assert saved["external_path"] == "/people/{id}"
    assert saved["tags"] == ["team-a"]
    # The audit trail names the route by its name: moved, it is one route changed.
    newest = (await api_call(gw.port, "GET", "/api/audit?limit=1")).json()["entries"][0]
    assert newest["changes"] == [{"route": "users", "change": "changed"}]

    assert (await api_call(gw.port, "DELETE", f"/api/routes/{orders}")).status == 204
    assert [r.id for r in gw.gateway.runtime.snapshot.config.routers] == [
        "users",
        derived_route_id(["GET"], "/static/{*path}"),
    ]


async def test_list_by_tag_with_ids(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(_config())
    every = (await api_call(gw.port, "GET", "/api/routes")).json()
    assert every["ids"] == [r.id for r in gw.gateway.runtime.snapshot.config.routers]
    team = (await api_call(gw.port, "GET", "/api/routes?tag=team-a")).json()
    assert [r["external_path"] for r in team["routes"]] == ["/users/{id}", "/orders"]
    assert team["ids"] == ["users", derived_route_id(["GET", "POST"], "/orders")]
    assert (await api_call(gw.port, "GET", "/api/routes?tag=none")).json()["routes"] == []


async def test_duplicate_names_are_refused_with_a_field_path(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(_config())
    post = await api_call(gw.port, "POST", "/api/routes", _route("/other", name="users"))
    assert post.status == 409
    assert "named 'users' exists already" in post.json()["detail"]
    checked = await api_call(
        gw.port, "POST", "/api/routes/validate", _route("/other", name="users")
    )
    assert checked.json()["errors"][0]["path"] == "name"
    config = _config()
    config["routers"][2]["name"] = "users"
    put = await api_call(gw.port, "PUT", "/api/config", config)
    assert put.status == 422
    assert [e["path"] for e in put.json()["errors"]] == ["routers[2].name"]
    rename = await api_call(
        gw.port, "PUT", "/api/routes/%2Fstatic%2F%7B%2Apath%7D", _route("/s", name="users")
    )
    assert rename.status == 409


async def _ids(gw: RunningGateway) -> list[str]:
    listed: list[str] = (await api_call(gw.port, "GET", "/api/routes")).json()["ids"]
    return listed


async def test_derived_ids_are_the_same_after_reload_and_restart(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    unnamed = {"version": 1, "hot_reload": False, "routers": [_route("/a"), _route("/b")]}
    first = await file_gateway_factory(unnamed)
    ids = await _ids(first)
    assert ids == [derived_route_id(["GET"], "/a"), derived_route_id(["GET"], "/b")]
    assert (await api_call(first.port, "POST", "/api/config/reload")).status == 200
    assert await _ids(first) == ids
    await first.gateway.stop(drain_timeout_s=1)
    again = await file_gateway_factory(unnamed, path=tmp_path / "restarted.json")
    assert await _ids(again) == ids


async def test_secrets_in_clear_for_the_admin_role_only(gateway_factory: GatewayFactory) -> None:
    secret = "j" * 40
    gw = await gateway_factory(
        {
            **_config(),
            "jwt_secret": secret,
            "admin": {
                "tokens": [
                    {"name": "root", "token": ADMIN, "role": "admin"},
                    {"name": "dash", "token": VIEWER, "role": "viewer"},
                ]
            },
        }
    )

    def bearer(token: str) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {token}")]

    plain = await api_call(gw.port, "GET", "/api/config", headers=bearer(VIEWER))
    assert plain.json()["jwt_secret"] == "***"
    refused = await api_call(gw.port, "GET", "/api/config?secrets=clear", headers=bearer(VIEWER))
    assert refused.status == 403
    assert "needs the admin role" in refused.json()["detail"]
    clear = await api_call(gw.port, "GET", "/api/config?secrets=clear", headers=bearer(ADMIN))
    assert clear.status == 200
    assert clear.json()["jwt_secret"] == secret
    assert clear.json()["admin"]["tokens"][1]["token"] == VIEWER
    assert clear.header("ETag") == plain.header("ETag")
    bad = await api_call(gw.port, "GET", "/api/config?secrets=some", headers=bearer(ADMIN))
    assert bad.status == 400
    entries = (await api_call(gw.port, "GET", "/api/audit", headers=bearer(ADMIN))).json()
    assert [(e["actor"], e["trigger"], e["changes"]) for e in entries["entries"]] == [
        ("root", "secrets_read", [])
    ]


async def test_validate_a_whole_config_without_applying_it(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({**_config(), "jwt_secret": "q" * 40})
    before = gw.gateway.runtime.snapshot
    ok = {**_config(), "jwt_secret": "***", "max_body_size": 5}
    checked = await api_call(gw.port, "POST", "/api/config/validate", ok)
    assert checked.json() == {"valid": True, "errors": []}
    bad = _config()
    bad["routers"][1]["name"] = "users"
    refused = (await api_call(gw.port, "POST", "/api/config/validate", bad)).json()
    assert refused["valid"] is False
    assert [e["path"] for e in refused["errors"]] == ["routers[1].name"]
    assert gw.gateway.runtime.snapshot is before


def test_a_redacted_route_secret_is_restored_from_the_route_with_the_same_id() -> None:
    def limited(path: str, password: str) -> dict[str, Any]:
        url = f"redis://app:{password}@127.0.0.1:6399/0"
        return _route(path, rate_limit={"requests_per_second": 5, "redis_url": url})

    current = load_config({"routers": [limited("/a", "pass-a"), limited("/b", "pass-b")]})
    shown = redacted_data(current)
    assert shown["routers"][1]["rate_limit"]["redis_url"] == "redis://app:***@127.0.0.1:6399/0"
    # /a dropped: /b moves to index 0, and keeps its own password, not /a's.
    sent = {**shown, "routers": [shown["routers"][1]]}
    restored = restore_secrets(sent, shown, revealed_data(current))
    assert isinstance(restored, dict)
    url = restored["routers"][0]["rate_limit"]["redis_url"]
    assert url == "redis://app:pass-b@127.0.0.1:6399/0"
