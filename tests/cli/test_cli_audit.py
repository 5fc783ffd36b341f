"""`kairos audit`, `kairos config versions` and `kairos config rollback`."""

from __future__ import annotations

from tests.cli.support import kairos
from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route


async def test_audit_versions_and_rollback(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    listed = await kairos("config", "versions", "--json", url=gw.url)
    assert listed.code == 0, listed.stderr
    [start] = listed.json()["versions"]
    added = await kairos(
        "routes", "add", "-e", "/b", "-i", "/b", "-b", backend.url, "-m", "GET", url=gw.url
    )
    assert added.code == 0, added.stderr
    assert (await raw_request(gw.port, "/b")).status == 200

    trail = await kairos("audit", url=gw.url)
    assert trail.code == 0, trail.stderr
    assert "+ GET /b" in trail.stdout
    assert "loopback" in trail.stdout

    stale = await kairos("config", "rollback", start["version"], "--if-match", '"x"', url=gw.url)
    assert stale.code == 4
    back = await kairos("config", "rollback", start["version"], url=gw.url)
    assert back.code == 0, back.stderr
    assert back.stdout.strip() == f"version {start['version']} is live again"
    assert (await raw_request(gw.port, "/b")).status == 404

    machine = await kairos("audit", "--limit", "1", "--json", url=gw.url)
    [newest] = machine.json()["entries"]
    assert (newest["trigger"], newest["changes"]) == (
        "rollback",
        [{"route": "GET /b", "change": "removed"}],
    )
    missing = await kairos("config", "rollback", "ffff", url=gw.url)
    assert missing.code == 4
    assert "no kept configuration version ffff" in missing.stderr
