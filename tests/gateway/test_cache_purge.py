"""Purging the response cache through ``/api/cache``, and its metrics."""

from __future__ import annotations

from tests.conftest import GatewayFactory
from tests.gateway.test_cache import Origin, cache, get, origin
from tests.redis_server import RedisServer
from tests.support import api_call, eventually, raw_request, route

__all__ = ["origin"]  # the fixture


async def two_routes(gateway_factory: GatewayFactory, origin: Origin, **config: object) -> int:
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route("/c/{*rest}", "/{*rest}", [origin], plugins=cache(**config)),
                route("/d/{*rest}", "/{*rest}", [origin], plugins=cache(**config)),
            ],
        }
    )
    return gw.port


async def cached(port: int, target: str) -> bool:
    await raw_request(port, target, host="api.example")
    got = await raw_request(port, target, host="api.example")
    return got.header("X-Cache") == "HIT"


async def test_purge_by_key_route_and_tag(origin: Origin, gateway_factory: GatewayFactory) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"), ("Cache-Tag", "red, blue"))
    origin.reply("b", ("Cache-Control", "max-age=60"), ("Cache-Tag", "blue"))
    origin.reply("c", ("Cache-Control", "max-age=60"))
    port = await two_routes(gateway_factory, origin)
    for target in ("/c/a", "/c/b", "/c/c?x=1", "/d/c"):
        assert await cached(port, target)

    purged = await api_call(port, "DELETE", "/api/cache?tag=blue")
    assert purged.status == 200
    assert purged.json() == {
        "purged": 2,
        "key": None,
        "route": None,
        "tag": "blue",
        "workers": None,  # one process
        "workers_pending": None,
    }
    miss = await raw_request(port, "/c/a", host="api.example")
    assert miss.header("X-Cache") == "MISS"

    by_key = await api_call(port, "DELETE", "/api/cache?key=api.example/c/c%3Fx%3D1")
    assert by_key.json()["purged"] == 1
    assert (await raw_request(port, "/d/c", host="api.example")).header("X-Cache") == "HIT"

    by_route = await api_call(port, "DELETE", "/api/cache?route=/d/{*rest}")
    assert by_route.json()["purged"] == 1
    assert (await raw_request(port, "/d/c", host="api.example")).header("X-Cache") == "MISS"


async def test_purge_needs_exactly_one_selector(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    for target in ("/api/cache", "/api/cache?key=a&tag=b"):
        refused = await api_call(gw.port, "DELETE", target)
        assert refused.status == 400
        assert refused.header("Content-Type") == "application/problem+json"
    assert (await api_call(gw.port, "POST", "/api/cache")).status == 405


async def test_figures_and_prometheus_families(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"), body=b"z" * 100)
    port = await two_routes(gateway_factory, origin, store={"type": "memory", "max_bytes": 99_999})
    await get(port, "a")
    await get(port, "a")
    await get(port, "a", ("Cache-Control", "no-store"))
    figures = (await api_call(port, "GET", "/api/cache")).json()
    mine = [s for s in figures["stores"] if s["store"] == "memory" and s["hits"] == 1]
    assert mine
    assert mine[0]["misses"] == 1
    assert mine[0]["bypass"] == 1
    assert mine[0]["entries"] == 1
    assert mine[0]["bytes"] > 100
    text = (await raw_request(port, "/metrics")).body.decode()
    for family in ("hits", "misses", "stale", "bypass", "evictions", "bytes", "entries"):
        assert f"kairos_cache_{family}" in text


async def test_purge_reaches_a_redis_store(
    origin: Origin, gateway_factory: GatewayFactory, redis_server: RedisServer
) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"), ("Cache-Tag", "t"))
    store = {"type": "redis", "url": redis_server.url, "prefix": "purge:"}
    port = await two_routes(gateway_factory, origin, store=store)
    await raw_request(port, "/c/a", host="api.example")

    async def stored() -> bool:
        got = await raw_request(port, "/c/a", host="api.example")
        return got.header("X-Cache") == "HIT"

    await eventually(stored)
    purged = await api_call(port, "DELETE", "/api/cache?tag=t")
    assert purged.json()["purged"] == 1
    assert (await raw_request(port, "/c/a", host="api.example")).header("X-Cache") == "MISS"
