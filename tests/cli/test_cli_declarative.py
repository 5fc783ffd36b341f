"""`kairos config dump | diff | apply` against a real gateway running from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kairos_cli.commands.declarative import plan, send
from kairos_cli.errors import CliError, ExitStatus
from kairos_client import KairosClient
from kairos_core import derived_route_id

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory, RunningGateway
from tests.support import api_call

SECRET = "s" * 40
ADMIN = "declarative-admin-" + "a" * 20
VIEWER = "declarative-viewer-" + "v" * 20


def _kairos_rs_config() -> dict[str, Any]:
    """A kairos-rs style file: no names, the legacy single-backend form on one route."""
    legacy = {
        "external_path": "/legacy",
        "internal_path": "/old",
        "methods": ["GET"],
        "host": "http://127.0.0.1",
        "port": 9,
    }
    return {
        "version": 1,
        "hot_reload": False,
        "max_body_size": 1000,
        "routers": [route_data("/users/{id}", "/u/{id}", 9), legacy],
    }


async def _gateway(factory: GatewayFactory, config: dict[str, Any] | None = None) -> RunningGateway:
    return await factory(config or _kairos_rs_config())


async def test_dump_edit_diff_apply_loop(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    dumped = tmp_path / "kairos.json"
    out = await kairos("config", "dump", "-o", str(dumped), url=gw.url)
    assert out.code == 0, out.stderr
    assert "ETag" in out.stderr
    data = json.loads(dumped.read_text())
    assert "version" not in data  # defaults are left out
    assert [r["external_path"] for r in data["routers"]] == ["/users/{id}", "/legacy"]

    same = await kairos("config", "diff", str(dumped), url=gw.url)
    assert same.code == ExitStatus.OK, same.stderr
    assert "no changes" in same.stdout

    users_id = derived_route_id(["GET"], "/users/{id}")
    data["routers"][0]["internal_path"] = "/v2/{id}"
    data["routers"].append(
        {**route_data("/orders", "/orders", 9), "name": "orders", "tags": ["shop"]}
    )
    data["max_body_size"] = 2000
    dumped.write_text(json.dumps(data, indent=2))

    changed = await kairos("config", "diff", str(dumped), url=gw.url)
    assert changed.code == ExitStatus.CHANGES, changed.stderr
    lines = changed.stdout.splitlines()
    assert f"~ route {users_id} (GET /users/{{id}})" in lines
    assert '    internal_path: "/u/{id}" -> "/v2/{id}"' in lines
    assert "+ route orders (GET /orders)" in lines
    assert "~ setting max_body_size" in lines
    assert "    value: 1000 -> 2000" in lines
    assert lines[-1] == "routes: 1 added, 1 changed; settings: 1 changed"
    assert "\x1b[" not in changed.stdout  # not a terminal: no colour

    machine = await kairos("--json", "config", "diff", str(dumped), url=gw.url)
    assert machine.code == ExitStatus.CHANGES
    body = machine.json()
    assert body["in_sync"] is False
    assert {"route": "orders", "change": "added", "label": "GET /orders"} in body["changes"]
    assert {
        "route": users_id,
        "change": "changed",
        "label": "GET /users/{id}",
        "fields": [{"path": "internal_path", "old": "/u/{id}", "new": "/v2/{id}"}],
    } in body["changes"]

    before = (await api_call(gw.port, "GET", "/api/config")).header("ETag")
    dry = await kairos("config", "apply", str(dumped), "--dry-run", url=gw.url)
    assert dry.code == 0, dry.stderr
    assert "dry run: nothing applied" in dry.stdout
    assert (await api_call(gw.port, "GET", "/api/config")).header("ETag") == before

    applied = await kairos("config", "apply", str(dumped), url=gw.url)
    assert applied.code == 0, applied.stderr
    assert "applied; ETag" in applied.stdout
    routes = gw.gateway.runtime.snapshot.config.routers
    assert [r.id for r in routes] == [users_id, derived_route_id(["GET"], "/legacy"), "orders"]
    assert routes[0].internal_path == "/v2/{id}"
    # The file keeps its author's form: the untouched legacy route still has host/port.
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["routers"][1] == _kairos_rs_config()["routers"][1]
    assert on_disk["routers"][2]["name"] == "orders"

    again = await kairos("config", "diff", str(dumped), url=gw.url)
    assert again.code == 0, again.stdout
    nothing = await kairos("config", "apply", str(dumped), url=gw.url)
    assert nothing.code == 0
    assert "nothing to apply" in nothing.stdout


async def test_apply_keeps_unlisted_routes_unless_pruned(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"routers": [route_data("/users/{id}", "/u/{id}", 9)]}))
    legacy_id = derived_route_id(["GET"], "/legacy")

    kept = await kairos("config", "diff", str(partial), url=gw.url)
    assert kept.code == 0, kept.stdout  # nothing the file lists differs; the rest is kept
    assert "1 route on the gateway not in the file: kept (--prune removes them)" in kept.stdout
    assert (await kairos("config", "apply", str(partial), url=gw.url)).code == 0
    assert len(gw.gateway.runtime.snapshot.config.routers) == 2

    pruned = await kairos("config", "diff", str(partial), "--prune", url=gw.url)
    assert pruned.code == ExitStatus.CHANGES
    assert f"- route {legacy_id} (GET /legacy)" in pruned.stdout.splitlines()
    assert "~ setting max_body_size" in pruned.stdout  # not in the file: back to its default
    applied = await kairos("config", "apply", str(partial), "--prune", url=gw.url)
    assert applied.code == 0, applied.stderr
    config = gw.gateway.runtime.snapshot.config
    assert [r.external_path for r in config.routers] == ["/users/{id}"]
    assert config.max_body_size == 10 * 1024 * 1024


async def test_apply_refuses_a_change_made_after_the_diff(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    wanted = _kairos_rs_config()
    wanted["max_body_size"] = 5
    path = tmp_path / "wanted.json"
    path.write_text(json.dumps(wanted))
    async with KairosClient(gw.url) as client:
        live, body, changes = await plan(client, path, prune=False, secrets="redacted")
        assert not changes.in_sync
        moved = await api_call(gw.port, "DELETE", "/api/routes/%2Flegacy")  # someone else
        assert moved.status == 204
        with pytest.raises(CliError) as caught:
            await send(client, body, live.etag)
    assert caught.value.exit_code == ExitStatus.CLIENT_ERROR
    assert "changed after it was read" in caught.value.message
    assert gw.gateway.runtime.snapshot.config.max_body_size == 1000  # nothing applied


async def test_invalid_file_or_merge_is_refused_before_sending(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"routers": [{**route_data("/x", "/x", 0), "name": "a b"}]}))
    out = await kairos("config", "apply", str(bad), url=gw.url)
    assert out.code == ExitStatus.ERROR
    assert "routers[0].name" in out.stderr
    assert "routers[0].backends[0].port" in out.stderr
    # Valid alone, but an unnamed route for GET /legacy with another id clashes when kept.
    clash = tmp_path / "clash.json"
    clash.write_text(
        json.dumps({"routers": [route_data("/legacy", "/new", 9, methods=["GET", "POST"])]})
    )
    merged = await kairos("config", "apply", str(clash), url=gw.url)
    assert merged.code == ExitStatus.ERROR
    assert "merged with the live configuration it is invalid" in merged.stderr
    # Valid offline; the gateway knows no such plugin (its own checks run before a PUT).
    unknown = tmp_path / "plugin.json"
    unknown.write_text(
        json.dumps({"routers": [{**route_data("/p", "/p", 9), "plugins": [{"name": "nope"}]}]})
    )
    refused = await kairos("config", "apply", str(unknown), "--dry-run", url=gw.url)
    assert refused.code == ExitStatus.ERROR
    assert "the gateway would refuse the result" in refused.stderr
    assert "routers[2].plugins[0]" in refused.stderr
    assert len(gw.gateway.runtime.snapshot.config.routers) == 2


async def test_secrets_redacted_unless_an_admin_asks_and_never_printed_in_a_diff(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = {
        **_kairos_rs_config(),
        "jwt_secret": SECRET,
        "admin": {
            "tokens": [
                {"name": "ops", "token": ADMIN, "role": "admin"},
                {"name": "dash", "token": VIEWER, "role": "viewer"},
            ]
        },
    }
    gw = await _gateway(file_gateway_factory, config)
    redacted = await kairos("--token", VIEWER, "config", "dump", url=gw.url)
    assert redacted.code == 0, redacted.stderr
    assert redacted.json()["jwt_secret"] == "***"
    refused = await kairos("--token", VIEWER, "config", "dump", "--secrets", "clear", url=gw.url)
    assert refused.code == ExitStatus.CLIENT_ERROR
    assert "needs the admin role" in refused.stderr
    clear = await kairos("--token", ADMIN, "config", "dump", "--secrets", "clear", url=gw.url)
    assert clear.code == 0, clear.stderr
    assert clear.json()["jwt_secret"] == SECRET
    audit = (await kairos("--token", ADMIN, "--json", "audit", url=gw.url)).json()
    assert [(e["actor"], e["trigger"]) for e in audit["entries"]] == [("ops", "secrets_read")]

    rotated = clear.json()
    rotated["jwt_secret"] = "r" * 40
    path = tmp_path / "rotated.json"
    path.write_text(json.dumps(rotated))
    blind = await kairos("--token", ADMIN, "config", "diff", str(path), url=gw.url)
    assert blind.code == ExitStatus.CHANGES
    lines = blind.stdout.splitlines()
    at = lines.index("~ setting jwt_secret")
    assert lines[at + 1].startswith("    value: (secret given in clear: not compared")
    seen = await kairos(
        "--token", ADMIN, "config", "diff", str(path), "--secrets", "clear", url=gw.url
    )
    assert seen.stdout.splitlines()[:2] == ["~ setting jwt_secret", "    value: (secret changed)"]
    assert "admin" not in seen.stdout  # compared in clear: the tokens are the same
    assert SECRET not in seen.stdout + blind.stdout
    assert "r" * 40 not in seen.stdout

    # A dump with "***" keeps the live secret: nothing to change.
    kept = tmp_path / "kept.json"
    kept.write_text(redacted.stdout)
    same = await kairos("--token", ADMIN, "config", "diff", str(kept), url=gw.url)
    assert same.code == 0, same.stdout
    args = ("--token", ADMIN, "config", "diff", str(kept), "--secrets", "clear")
    compared = await kairos(*args, url=gw.url)
    assert compared.code == 0, compared.stdout


async def test_diff_is_coloured_on_a_terminal_unless_no_color(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await _gateway(file_gateway_factory)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**_kairos_rs_config(), "max_body_size": 3}))
    coloured = await kairos("config", "diff", str(path), url=gw.url, env={"FORCE_COLOR": "1"})
    assert coloured.code == ExitStatus.CHANGES
    assert "\x1b[33m~ setting max_body_size" in coloured.stdout
    plain = await kairos(
        "config", "diff", str(path), url=gw.url, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}
    )
    assert "\x1b[33m" not in plain.stdout
