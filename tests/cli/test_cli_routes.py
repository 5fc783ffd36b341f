"""`kairos routes ...` against a real gateway running from a config file."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory, RunningGateway


def _saved(tmp_path: Path) -> dict[str, dict[str, object]]:
    data = json.loads((tmp_path / "config.json").read_text())
    return {r["external_path"]: r for r in data["routers"]}


async def _gateway(file_gateway_factory: GatewayFactory) -> RunningGateway:
    config = {
        "version": 1,
        "hot_reload": False,
        "routers": [route_data("/users/{id}", "/u/{id}", 9)],
    }
    return await file_gateway_factory(config)


async def test_list_and_show(file_gateway_factory: GatewayFactory) -> None:
    gw = await _gateway(file_gateway_factory)
    human = await kairos("routes", "list", url=gw.url)
    assert human.code == 0, human.stderr
    assert "/users/{id}" in human.stdout
    assert "http://127.0.0.1:9" in human.stdout
    assert "1 route; config version 1, ETag " in human.stdout
    listed = (await kairos("--json", "routes", "list", url=gw.url)).json()
    assert [r["external_path"] for r in listed["routes"]] == ["/users/{id}"]

    shown = await kairos("routes", "show", "/users/{id}", url=gw.url)
    assert shown.code == 0, shown.stderr
    assert "internal_path" in shown.stdout
    assert "/u/{id}" in shown.stdout
    data = (await kairos("--json", "routes", "show", "/users/{id}", url=gw.url)).json()
    assert data["internal_path"] == "/u/{id}"
    assert data["backends"] == [
        {"host": "http://127.0.0.1", "port": 9, "weight": 1, "tls_verify": True}
    ]


async def test_add_from_flags_file_and_stdin(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    flags = await kairos(
        "routes", "add",
        "--external-path", "/orders/{*rest}",
        "--internal-path", "/v1/{*rest}",
        "--method", "get", "-m", "POST,PUT",
        "--backend", "http://127.0.0.1:8001,weight=3",
        "-b", "127.0.0.1:8002",
        "--strategy", "weighted",
        "--read-timeout-ms", "1500",
        url=gw.url,
    )  # fmt: skip
    assert flags.code == 0, flags.stderr
    assert flags.stdout.startswith("added GET,POST,PUT /orders/{*rest} -> /v1/{*rest}")
    saved = _saved(tmp_path)["/orders/{*rest}"]
    assert saved["methods"] == ["GET", "POST", "PUT"]
    assert saved["backends"] == [  # saved as given: defaults are not written
        {"host": "http://127.0.0.1", "port": 8001, "weight": 3},
        {"host": "http://127.0.0.1", "port": 8002},
    ]
    assert saved["load_balancing_strategy"] == "weighted"
    assert saved["timeouts"] == {"read_ms": 1500}

    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps(route_data("/files", "/f", 8003, methods=["GET"])))
    from_file = await kairos(
        "--json", "routes", "add", "--file", str(route_file), "-m", "HEAD", url=gw.url
    )
    assert from_file.code == 0, from_file.stderr
    assert from_file.json()["methods"] == ["HEAD"]  # the flag wins over the file

    piped = json.dumps(route_data("/piped", "/p", 8004))
    from_stdin = await kairos("--json", "routes", "add", "-f", "-", url=gw.url, input=piped)
    assert from_stdin.code == 0, from_stdin.stderr
    assert from_stdin.json()["external_path"] == "/piped"
    assert set(_saved(tmp_path)) == {"/users/{id}", "/orders/{*rest}", "/files", "/piped"}


async def test_update_changes_only_the_given_fields(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    result = await kairos(
        "routes", "update", "/users/{id}", "--internal-path", "/v2/u/{id}", "--auth-required",
        url=gw.url,
    )  # fmt: skip
    assert result.code == 4  # auth_required needs a JWT key in the config
    assert "auth_required" in result.stderr or "jwt" in result.stderr.lower()

    result = await kairos(
        "routes", "update", "/users/{id}", "-i", "/v2/u/{id}", "-m", "GET,DELETE", url=gw.url
    )
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("updated GET,DELETE /users/{id} -> /v2/u/{id}")
    saved = _saved(tmp_path)["/users/{id}"]
    assert saved["internal_path"] == "/v2/u/{id}"
    assert saved["backends"] == [{"host": "http://127.0.0.1", "port": 9}]  # as written

    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(route_data("/people/{id}", "/p/{id}", 10)))
    result = await kairos(
        "--json", "routes", "update", "/users/{id}", "--file", str(moved), url=gw.url
    )
    assert result.code == 0, result.stderr
    assert result.json()["external_path"] == "/people/{id}"
    assert set(_saved(tmp_path)) == {"/people/{id}"}


async def test_if_match_on_update_and_delete(file_gateway_factory: GatewayFactory) -> None:
    gw = await _gateway(file_gateway_factory)
    etag = (await kairos("--json", "status", url=gw.url)).json()["config"]["etag"]
    await kairos(
        "routes",
        "add",
        "-e",
        "/other",
        "-i",
        "/o",
        "-m",
        "GET",
        "-b",
        "http://127.0.0.1:9",
        url=gw.url,
    )

    stale = await kairos(
        "routes", "update", "/users/{id}", "-i", "/x/{id}", "--if-match", etag, url=gw.url
    )
    assert stale.code == 4
    assert stale.stderr.startswith("kairos: 412 precondition_failed: ")
    stale = await kairos("routes", "delete", "/other", "--if-match", etag, url=gw.url)
    assert stale.code == 4

    current = (await kairos("--json", "status", url=gw.url)).json()["config"]["etag"]
    deleted = await kairos(
        "--json", "routes", "delete", "/other", "--if-match", current, url=gw.url
    )
    assert deleted.code == 0, deleted.stderr
    assert deleted.json()["deleted"] == "/other"
    assert deleted.json()["etag"] != current
    human = await kairos("routes", "delete", "/users/{id}", url=gw.url)
    assert human.code == 0, human.stderr
    assert human.stdout.startswith("deleted /users/{id}")
    assert (await kairos("--json", "routes", "list", url=gw.url)).json()["routes"] == []


async def test_routes_sharing_a_path_are_picked_by_method(
    file_gateway_factory: GatewayFactory,
) -> None:
    gw = await _gateway(file_gateway_factory)
    added = await kairos(
        "routes",
        "add",
        "-e",
        "/users/{id}",
        "-i",
        "/w/{id}",
        "-m",
        "PUT",
        "-b",
        "http://127.0.0.1:9",
        url=gw.url,
    )
    assert added.code == 0, added.stderr
    ambiguous = await kairos("routes", "show", "/users/{id}", url=gw.url)
    assert ambiguous.code == 4
    assert ambiguous.stderr.startswith("kairos: 409 ")
    picked = await kairos("--json", "routes", "show", "/users/{id}", "--method", "PUT", url=gw.url)
    assert picked.json()["internal_path"] == "/w/{id}"
    updated = await kairos(
        "routes", "update", "/users/{id}", "--for-method", "PUT", "-i", "/z/{id}", url=gw.url
    )
    assert updated.code == 0, updated.stderr
    deleted = await kairos("routes", "delete", "/users/{id}", "--method", "GET", url=gw.url)
    assert deleted.code == 0, deleted.stderr
    remaining = (await kairos("--json", "routes", "list", url=gw.url)).json()["routes"]
    assert [(r["methods"], r["internal_path"]) for r in remaining] == [(["PUT"], "/z/{id}")]


async def test_validate(file_gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await _gateway(file_gateway_factory)
    good = await kairos(
        "routes", "validate", "-e", "/new", "-i", "/n", "-m", "GET", "-b", "http://a:1", url=gw.url
    )
    assert (good.code, good.stdout.strip()) == (0, "valid")

    bad = await kairos(
        "routes", "validate", "-e", "/health", "-i", "/n", "-b", "http://a:1", url=gw.url
    )
    assert bad.code == 1
    assert "external_path: reserved path" in bad.stderr
    assert "methods: field required" in bad.stderr

    route_file = tmp_path / "r.json"
    route_file.write_text(
        '{"external_path": "/v", "internal_path": "/v", "methods": ["GET"], "backendz": []}'
    )
    machine = await kairos("--json", "routes", "validate", "-f", str(route_file), url=gw.url)
    assert machine.code == 1
    errors = {e["path"]: e["message"] for e in machine.json()["errors"]}
    assert machine.json()["valid"] is False
    assert "did you mean 'backends'" in errors["backendz"]
    assert len(_saved(tmp_path)) == 1  # nothing saved
