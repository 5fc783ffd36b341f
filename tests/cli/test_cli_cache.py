"""`kairos cache stats` and `kairos cache purge` against a real gateway."""

from __future__ import annotations

import json

from tests.cli.support import kairos
from tests.conftest import GatewayFactory
from tests.gateway.test_cache import Origin, cache, origin
from tests.support import raw_request, route

__all__ = ["origin"]  # the fixture


async def test_purge_by_route_and_stats(origin: Origin, gateway_factory: GatewayFactory) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"))
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/cli/{*rest}", "/{*rest}", [origin], plugins=cache())]}
    )
    await raw_request(gw.port, "/cli/a")
    assert (await raw_request(gw.port, "/cli/a")).header("X-Cache") == "HIT"

    stats = await kairos("cache", "stats", url=gw.url)
    assert stats.code == 0, stats.stderr
    assert "memory" in stats.stdout

    purged = await kairos("cache", "purge", "--route", "/cli/{*rest}", url=gw.url)
    assert purged.code == 0, purged.stderr
    assert "purged 1 cached responses" in purged.stdout
    assert (await raw_request(gw.port, "/cli/a")).header("X-Cache") == "MISS"

    machine = await kairos("--json", "cache", "purge", "--tag", "none", url=gw.url)
    assert json.loads(machine.stdout)["purged"] == 0

    usage = await kairos("cache", "purge", url=gw.url)
    assert usage.code == 2
    assert "exactly one" in usage.stderr
