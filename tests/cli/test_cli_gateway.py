"""`kairos status`, `health`, `reload`, `backends`, `metrics` against a real gateway."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request

TOKEN = "cli-admin-token-" + "q" * 24


async def test_status_human_and_json(file_gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": [route_data("/a", "/a", 9)]})
    human = await kairos("status", url=gw.url)
    assert human.code == 0, human.stderr
    assert "healthy" in human.stdout
    assert "ready" in human.stdout
    assert str(tmp_path / "config.json") in human.stdout
    assert "1 total, 1 available" in human.stdout

    machine = await kairos("--json", "status", url=gw.url)
    data = machine.json()
    assert data["health"]["status"] == "healthy"
    assert data["ready"]["backends"]["total"] == 1
    assert data["config"]["routes"] == 1
    assert data["config"]["source_path"] == str(tmp_path / "config.json")


async def test_health_and_the_url_from_the_environment(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    human = await kairos("health", env={"KAIROS_GATEWAY_URL": gw.url})
    assert human.code == 0, human.stderr
    assert human.stdout.startswith("healthy: version ")
    data = (await kairos("--json", "health", url=gw.url)).json()
    assert data["status"] == "healthy"
    assert data["routes"] == 0


async def test_reload_applies_the_file_and_refuses_an_invalid_one(
    file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = {"version": 1, "hot_reload": False, "routers": [route_data("/a", "/a", 9)]}
    gw = await file_gateway_factory(config)
    config["routers"].append(route_data("/b", "/b", 9))
    (tmp_path / "config.json").write_text(json.dumps(config))

    human = await kairos("reload", url=gw.url)
    assert human.code == 0, human.stderr
    assert "2 routes" in human.stdout
    data = (await kairos("--json", "reload", url=gw.url)).json()
    assert data["routes"] == 2
    assert data["last_reload"]["ok"] is True

    config["routers"][1]["backends"][0]["port"] = 0
    (tmp_path / "config.json").write_text(json.dumps(config))
    bad = await kairos("reload", url=gw.url)
    assert bad.code == 4
    first, *details = bad.stderr.splitlines()
    assert first.startswith("kairos: 422 invalid_config: ")
    assert any(line.strip().startswith("routers[1].backends[0].port:") for line in details)
    assert (await kairos("--json", "health", url=gw.url)).json()["routes"] == 2  # still serving


async def test_reload_without_a_file_is_a_conflict(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    result = await kairos("reload", url=gw.url)
    assert result.code == 4
    assert result.stderr.startswith("kairos: 409 ")


async def test_backends(gateway_factory: GatewayFactory, backend: EchoBackend) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route_data("/a", "/a", backend.port)]})
    human = await kairos("backends", url=gw.url)
    assert human.code == 0, human.stderr
    assert backend.url in human.stdout
    assert "closed" in human.stdout
    data = (await kairos("--json", "backends", url=gw.url)).json()
    assert [b["address"] for b in data["backends"]] == [backend.url]
    assert data["backends"][0]["routes"] == ["/a"]

    empty = await gateway_factory({"version": 1, "routers": []})
    assert "no backends" in (await kairos("backends", url=empty.url)).stdout


async def test_metrics_snapshot_and_watch(
    gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route_data("/a", "/a", backend.port)]})
    for _ in range(3):
        assert (await raw_request(gw.port, "/a")).status == 200

    human = await kairos("metrics", url=gw.url)
    assert human.code == 0, human.stderr
    assert "/a" in human.stdout
    assert backend.url in human.stdout
    assert "Admin" in human.stdout  # the CLI's own calls, kept out of the totals
    snapshot = (await kairos("--json", "metrics", url=gw.url)).json()
    assert snapshot["totals"]["requests"] == 3
    assert snapshot["admin"]["requests"] >= 1
    assert any(r["route"] == "/a" and r["requests"] == 3 for r in snapshot["routes"])

    watched = await kairos(
        "--json", "metrics", "--watch", "--interval", "0.1", "--count", "3", url=gw.url
    )
    assert watched.code == 0, watched.stderr
    lines = watched.json_lines()
    assert len(lines) == 3
    assert all("latency_ms_1m" in line for line in lines)

    table = await kairos("metrics", "-n", "0.1", "-c", "2", url=gw.url)
    assert table.code == 0, table.stderr
    assert table.stdout.count("Requests") == 2


async def test_admin_token_from_option_and_environment(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []}, admin_token=TOKEN)
    assert (await kairos("--token", TOKEN, "status", url=gw.url)).code == 0
    assert (await kairos("status", url=gw.url, env={"KAIROS_ADMIN_TOKEN": TOKEN})).code == 0
    refused = await kairos("status", url=gw.url)
    assert refused.code == 4
    assert refused.stderr.startswith("kairos: 401 unauthorized: ")
    assert "KAIROS_ADMIN_TOKEN" in refused.stderr  # the hint
