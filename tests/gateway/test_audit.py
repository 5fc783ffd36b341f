"""The audit trail, kept configuration versions and rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kairos_gateway.management.audit import config_changes

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, api_call, eventually, raw_request, route

ADMIN = "admin-token-0123456789"
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789"
SECRET = "a-jwt-secret-that-must-never-be-recorded"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def config(backend: EchoBackend) -> dict[str, Any]:
    return {
        "version": 1,
        "routers": [route("/a", "/a", [backend], methods=["GET"])],
        "admin": {
            "token": ADMIN,
            "tokens": [
                {"name": "deployer", "token": OPERATOR, "role": "operator"},
                {"name": "dashboards", "token": VIEWER, "role": "viewer"},
            ],
        },
    }


async def audit(gw: RunningGateway, query: str = "") -> dict[str, Any]:
    resp = await api_call(gw.port, "GET", f"/api/audit{query}", headers=bearer(VIEWER))
    assert resp.status == 200, resp.body
    body: dict[str, Any] = resp.json()
    return body


def test_changes_are_named_route_by_route_and_setting_by_setting() -> None:
    before = {
        "routers": [{"external_path": "/a", "methods": ["GET"], "x": 1}],
        "jwt": {"secret": "***"},
        "cors": None,
    }
    after = {
        "routers": [
            {"external_path": "/a", "methods": ["GET"], "x": 2},
            {"external_path": "/b", "methods": ["POST", "GET"]},
        ],
        "jwt": {"secret": "***", "issuer": "me"},
        "rate_limit": {},
    }
    assert config_changes(before, after) == [
        {"route": "GET /a", "change": "changed"},
        {"route": "GET,POST /b", "change": "added"},
        {"setting": "cors", "change": "removed"},
        {"setting": "jwt", "change": "changed"},
        {"setting": "rate_limit", "change": "added"},
    ]


async def test_each_change_is_recorded_with_its_actor_and_no_secret(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await file_gateway_factory(config(backend))
    created = await api_call(
        gw.port,
        "POST",
        "/api/routes",
        route("/b", "/b", [backend], methods=["GET"]),
        headers=bearer(OPERATOR),
    )
    assert created.status == 201
    jwt = await api_call(
        gw.port,
        "PUT",
        "/api/config/jwt",
        {"secret": SECRET, "algorithms": ["HS256"]},
        headers=bearer(ADMIN),
    )
    assert jwt.status == 200, jwt.body
    # A hand edit of the file, seen by the watcher.
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    data["routers"] = [r for r in data["routers"] if r["external_path"] != "/b"]
    path.write_text(json.dumps(data, indent=2))

    async def three() -> bool:
        return len((await audit(gw))["entries"]) == 3

    await eventually(three)
    newest, middle, oldest = (await audit(gw))["entries"]
    assert (oldest["actor"], oldest["source"], oldest["trigger"]) == (
        "deployer",
        "127.0.0.1",
        "api",
    )
    assert oldest["changes"] == [{"route": "GET /b", "change": "added"}]
    assert (middle["actor"], middle["trigger"]) == ("admin", "api")
    assert middle["changes"] == [{"setting": "jwt", "change": "added"}]
    assert (newest["actor"], newest["trigger"]) == ("file", "watcher")
    assert newest["changes"] == [{"route": "GET /b", "change": "removed"}]
    assert oldest["version"] == middle["previous_version"]
    assert [e["id"] for e in (oldest, middle, newest)] == [1, 2, 3]
    trail = (tmp_path / ".kairos-audit" / "audit.jsonl").read_text()
    assert SECRET not in trail
    assert len(trail.splitlines()) == 3


async def test_pages_of_entries(backend: EchoBackend, file_gateway_factory: GatewayFactory) -> None:
    gw = await file_gateway_factory(config(backend))
    for name in ("b", "c", "d"):
        resp = await api_call(
            gw.port,
            "POST",
            "/api/routes",
            route(f"/{name}", "/x", [backend], methods=["GET"]),
            headers=bearer(OPERATOR),
        )
        assert resp.status == 201
    first = await audit(gw, "?limit=2")
    assert [e["id"] for e in first["entries"]] == [3, 2]
    assert first["next"] == 2
    second = await audit(gw, f"?limit=2&before={first['next']}")
    assert [e["id"] for e in second["entries"]] == [1]
    assert second["next"] is None
    bad = await api_call(gw.port, "GET", "/api/audit?limit=0", headers=bearer(VIEWER))
    assert bad.status == 400


async def test_rollback_restores_a_kept_version_on_the_data_path(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await file_gateway_factory(config(backend))
    versions = (
        await api_call(gw.port, "GET", "/api/config/versions", headers=bearer(VIEWER))
    ).json()
    [original] = versions["versions"]
    assert original["live"] is True
    created = await api_call(
        gw.port,
        "POST",
        "/api/routes",
        route("/b", "/b", [backend], methods=["GET"]),
        headers=bearer(OPERATOR),
    )
    assert created.status == 201
    assert (await raw_request(gw.port, "/b")).status == 200

    # A viewer may not roll back; a stale If-Match is refused; then it goes through.
    body = {"version": original["version"]}
    refused = await api_call(gw.port, "POST", "/api/config/rollback", body, headers=bearer(VIEWER))
    assert refused.status == 403
    stale = await api_call(
        gw.port,
        "POST",
        "/api/config/rollback",
        body,
        headers=[*bearer(OPERATOR), ("If-Match", '"0000"')],
    )
    assert stale.status == 412
    done = await api_call(gw.port, "POST", "/api/config/rollback", body, headers=bearer(OPERATOR))
    assert done.status == 200, done.body
    assert done.json() == {"restored": original["version"], "version": original["version"]}
    assert (await raw_request(gw.port, "/b")).status == 404
    saved = json.loads((tmp_path / "config.json").read_text())
    assert [r["external_path"] for r in saved["routers"]] == ["/a"]
    newest = (await audit(gw))["entries"][0]
    assert (newest["actor"], newest["trigger"]) == ("deployer", "rollback")
    assert newest["changes"] == [{"route": "GET /b", "change": "removed"}]
    unknown = await api_call(
        gw.port, "POST", "/api/config/rollback", {"version": "ffff"}, headers=bearer(OPERATOR)
    )
    assert unknown.status == 404


async def test_without_a_config_file_the_trail_is_kept_in_memory(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    resp = await api_call(gw.port, "POST", "/api/routes", route("/b", "/b", [backend]))
    assert resp.status == 201
    entries = (await api_call(gw.port, "GET", "/api/audit")).json()["entries"]
    assert [(e["actor"], e["trigger"], e["id"]) for e in entries] == [("loopback", "api", 1)]
