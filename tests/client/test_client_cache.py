"""`KairosClient.cache_stats()` and `purge_cache()` against a real gateway."""

from __future__ import annotations

import pytest
from kairos_client import BadRequest
from kairos_core.cache import CachePurged, CacheStatus

from tests.client.support import client_for
from tests.conftest import GatewayFactory
from tests.gateway.test_cache import Origin, cache, origin
from tests.support import raw_request, route

__all__ = ["origin"]  # the fixture


async def test_purge_by_tag_and_figures(origin: Origin, gateway_factory: GatewayFactory) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"), ("Cache-Tag", "news"))
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [route("/client-cache/{*rest}", "/{*rest}", [origin], plugins=cache())],
        }
    )
    await raw_request(gw.port, "/client-cache/a")
    assert (await raw_request(gw.port, "/client-cache/a")).header("X-Cache") == "HIT"
    async with client_for(gw) as client:
        status = await client.cache_stats()
        purged = await client.purge_cache(tag="news")
        with pytest.raises(ValueError, match="exactly one"):
            await client.purge_cache(tag="a", key="b")
        with pytest.raises(BadRequest):
            await client.purge_cache(tag="")
    assert isinstance(status, CacheStatus)
    assert any(s.hits >= 1 for s in status.stores)
    assert purged == CachePurged(purged=1, tag="news")
    assert (await raw_request(gw.port, "/client-cache/a")).header("X-Cache") == "MISS"
