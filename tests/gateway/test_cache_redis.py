"""The ``cache`` plugin's Redis store: shared by gateways, and out of the way when down."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tests.conftest import GatewayFactory
from tests.gateway.test_cache import Origin, get, origin
from tests.redis_server import RedisServer
from tests.support import eventually, raw_request, route

__all__ = ["origin"]  # the fixture


async def redis_gateway(
    gateway_factory: GatewayFactory, origin: Origin, redis_server: RedisServer, **store: Any
) -> int:
    config = {"store": {"type": "redis", "url": redis_server.url, **store}}
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [
                route(
                    "/c/{*rest}",
                    "/{*rest}",
                    [origin],
                    plugins=[{"name": "cache", "config": config}],
                )
            ],
        }
    )
    return gw.port


async def test_two_gateways_share_the_redis_store(
    origin: Origin, gateway_factory: GatewayFactory, redis_server: RedisServer, redis: Redis
) -> None:
    origin.reply(
        "shared",
        ("Cache-Control", "max-age=60"),
        ("Vary", "Accept-Language"),
        ("Cache-Tag", "t1"),
        body=b"from the origin",
    )
    # Two store settings that differ (timeouts) so each gateway has its own client:
    # what one stores, the other can only find in Redis.
    one = await redis_gateway(gateway_factory, origin, redis_server, timeout_s=1)
    two = await redis_gateway(gateway_factory, origin, redis_server, timeout_s=2)

    # Both gateways are reached by the same name, as behind one load balancer.
    async def get(port: int, path: str, *headers: tuple[str, str]) -> Any:
        return await raw_request(port, f"/c/{path}", headers=list(headers), host="api.example")

    first = await get(one, "shared", ("Accept-Language", "en"))
    assert first.header("X-Cache") == "MISS"
    # Stored once the write reached Redis (after the response).
    await eventually(lambda: redis.zcard("kairos:cache:lru"))
    got = await get(two, "shared", ("Accept-Language", "EN"))
    assert (got.header("X-Cache"), got.body) == ("HIT", b"from the origin")
    assert origin.hits["shared"] == 1
    other = await get(two, "shared", ("Accept-Language", "de"))
    assert other.header("X-Cache") == "MISS"
    assert origin.hits["shared"] == 2


async def test_the_origin_serves_when_redis_is_down(
    origin: Origin, gateway_factory: GatewayFactory, redis_server: RedisServer, redis: Redis
) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"))
    port = await redis_gateway(gateway_factory, origin, redis_server, timeout_s=0.2)
    await get(port, "a")
    await eventually(lambda: redis.zcard("kairos:cache:lru"))
    assert (await get(port, "a")).header("X-Cache") == "HIT"
    redis_server.stop()
    for _ in range(3):
        got = await get(port, "a")
        assert got.status == 200
        assert got.body == b"body of a"
        assert got.header("X-Cache") == "MISS"
    assert origin.hits["a"] >= 3


async def test_a_background_revalidation_refreshes_the_redis_entry(
    origin: Origin, gateway_factory: GatewayFactory, redis_server: RedisServer, redis: Redis
) -> None:
    origin.reply("s", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    port = await redis_gateway(gateway_factory, origin, redis_server)
    await get(port, "s")
    await eventually(lambda: redis.zcard("kairos:cache:lru"))
    origin.reply("s", ("Cache-Control", "max-age=60"), body=b"new")
    stale = await get(port, "s")
    assert (stale.body, stale.header("X-Cache")) == (b"old", "STALE")

    async def refreshed() -> bool:
        answer = await get(port, "s")
        return bool(answer.body == b"new" and answer.header("X-Cache") == "HIT")

    await eventually(refreshed)
    assert origin.hits["s"] == 2
