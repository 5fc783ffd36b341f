"""Several gateway nodes sharing their configuration through one Redis (a real
redis-server per test; the nodes are in-process gateways, each with its own client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kairos_core import ClusterConfig, load_config
from kairos_gateway import GatewaySettings
from kairos_gateway.cluster import ConfigStore, StaleVersion, shared_json

from tests.conftest import GatewayFactory, RunningGateway
from tests.redis_server import RedisServer
from tests.support import EchoBackend, RawResponse, ResettingServer, raw_request, route

JSON = [("Content-Type", "application/json")]


def _config(redis: RedisServer, *routes: dict[str, Any], **cluster: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "routers": list(routes),
        "cluster": {"redis_url": redis.url, **cluster},
    }


async def _api(
    node: RunningGateway,
    path: str,
    method: str = "GET",
    body: object = None,
    headers: list[tuple[str, str]] | None = None,
) -> RawResponse:
    data = b"" if body is None else json.dumps(body).encode()
    return await raw_request(
        node.port, path, method=method, body=data, headers=[*JSON, *(headers or [])]
    )


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    """Poll ``check`` until it holds; fail after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not await check():
            await asyncio.sleep(0.02)


def _serves(node: RunningGateway, path: str, status: int = 200) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await raw_request(node.port, path)).status == status

    return check


async def _cluster_status(node: RunningGateway) -> dict[str, Any]:
    status: dict[str, Any] = (await _api(node, "/api/config/status")).json()["cluster"]
    return status


async def test_a_change_on_one_node_serves_on_the_other_within_a_second(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(_config(redis_server, route("/seed", "/seed", [backend])))
    # B joins through KAIROS_REDIS_URL, with a config file of its own: Redis wins.
    b = await gateway_factory(
        {"version": 1, "routers": [route("/b-only", "/b", [backend])]},
        redis_url=redis_server.url,
    )
    assert (await raw_request(b.port, "/seed")).status == 200
    assert (await raw_request(b.port, "/b-only")).status == 404
    assert (await _cluster_status(b))["applied_version"] == 1

    created = await _api(a, "/api/routes", "POST", route("/new", "/new", [backend]))
    assert created.status == 201
    await _eventually(_serves(b, "/new"), within_s=1.0)

    deleted = await _api(a, "/api/routes/%2Fnew", "DELETE")
    assert deleted.status in (200, 204)
    await _eventually(_serves(b, "/new", 404), within_s=1.0)
    for node in (a, b):
        status = await _cluster_status(node)
        assert (status["state"], status["applied_version"]) == ("connected", 3)
    # Both nodes run the same configuration, so they name it with the same tag.
    etags = {(await _api(n, "/api/config")).header("ETag") for n in (a, b)}
    assert len(etags) == 1


async def test_stale_writes_get_412_and_unconditional_ones_are_rebased(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(_config(redis_server, route("/seed", "/seed", [backend])))
    store = ConfigStore(redis_server.url, key_prefix="kairos:", timeout_s=1.0)
    try:
        # The store itself: a compare-and-set on a version that is not current.
        with pytest.raises(StaleVersion) as stale:
            await store.write(0, "{}", "test")
        assert stale.value.stored == 1

        # Another node writes version 2 behind A's back; A answers the next write
        # before or after applying it, and either way If-Match names version 1: 412.
        etag = (await _api(a, "/api/config")).header("ETag")
        other = load_config(_config(redis_server, route("/other", "/o", [backend])))
        assert await store.write(1, shared_json(other), "other-node") == 2
        put = await _api(
            a, "/api/routes", "POST", route("/late", "/late", [backend]), [("If-Match", etag)]
        )
        assert put.status == 412
        assert put.json()["type"] == "precondition_failed"

        # Without If-Match the change is made on the newest version, losing nothing.
        assert await store.write(2, shared_json(load_config(_config(redis_server))), "x") == 3
        created = await _api(a, "/api/routes", "POST", route("/mine", "/mine", [backend]))
        assert created.status == 201
        stored = await store.read()
        assert stored is not None
        assert stored.version == 4
        assert [r["external_path"] for r in json.loads(stored.config)["routers"]] == ["/mine"]
        assert "cluster" not in json.loads(stored.config)  # each node keeps its own block

        # The cluster block belongs to the node: a change that sets another is refused.
        config = (await _api(a, "/api/config")).json()
        config["cluster"]["key_prefix"] = "elsewhere:"
        refused = await _api(a, "/api/config", "PUT", config)
        assert refused.status == 422
        assert refused.json()["errors"][0]["path"] == "cluster"
    finally:
        await store.aclose()


async def test_two_nodes_seeding_an_empty_redis_at_once_agree(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a, b = await asyncio.gather(
        gateway_factory(_config(redis_server, route("/a", "/a", [backend]))),
        gateway_factory(_config(redis_server, route("/b", "/b", [backend]))),
    )
    statuses = [await _cluster_status(n) for n in (a, b)]
    assert [s["applied_version"] for s in statuses] == [1, 1]
    served = [(await raw_request(n.port, "/a")).status for n in (a, b)]
    assert served in ([200, 200], [404, 404])


async def test_redis_outage_keeps_nodes_serving_refuses_writes_and_loses_nothing(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(_config(redis_server, route("/x", "/x", [backend])))
    b = await gateway_factory(_config(redis_server))
    assert (await _api(a, "/api/routes", "POST", route("/before", "/b", [backend]))).status == 201
    await _eventually(_serves(b, "/before"), within_s=1.0)

    redis_server.kill()
    refused = await _api(a, "/api/routes", "POST", route("/during", "/d", [backend]))
    assert refused.status == 503
    assert refused.json()["type"] == "not_persisted"
    routes = (await _api(a, "/api/routes")).json()["routes"]
    assert [r["external_path"] for r in routes] == ["/x", "/before"]
    for node in (a, b):
        for path in ("/x", "/before"):
            assert (await raw_request(node.port, path)).status == 200
        assert (await raw_request(node.port, "/during")).status == 404

        async def degraded(node: RunningGateway = node) -> bool:
            return (await _cluster_status(node))["state"] == "degraded"

        await _eventually(degraded, within_s=3.0)
        ready = await raw_request(node.port, "/ready")
        assert ready.status == 200  # still serving: taking it out would widen the outage
        assert ready.json()["cluster"]["state"] == "degraded"
        assert ready.json()["cluster"]["error"]

    # Back, but empty (no persistence): the nodes put their version back themselves.
    redis_server.start()

    async def converged() -> bool:
        statuses = [await _cluster_status(n) for n in (a, b)]
        return all(
            (s["state"], s["applied_version"], s["stored_version"]) == ("connected", 2, 2)
            for s in statuses
        )

    await _eventually(converged, within_s=5.0)
    assert (await _api(b, "/api/routes", "POST", route("/after", "/af", [backend]))).status == 201
    await _eventually(_serves(a, "/after"), within_s=1.0)
    for node in (a, b):
        for path in ("/x", "/before", "/after"):
            assert (await raw_request(node.port, path)).status == 200


async def test_an_invalid_stored_version_is_skipped_and_the_next_one_applied(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(_config(redis_server, route("/x", "/x", [backend])))
    store = ConfigStore(redis_server.url, key_prefix="kairos:", timeout_s=1.0)
    try:
        await store.write(1, json.dumps({"version": 1, "routers": [{"nonsense": 1}]}), "bad")

        async def rejected() -> bool:
            return (await _api(a, "/api/config/status")).json()["last_reload"] is not None

        await _eventually(rejected, within_s=2.0)
        status = (await _api(a, "/api/config/status")).json()
        assert status["last_reload"]["ok"] is False
        assert status["last_reload"]["trigger"] == "cluster"
        assert status["cluster"]["applied_version"] == 1
        assert "version 2" in status["cluster"]["error"]
        assert (await raw_request(a.port, "/x")).status == 200

        good = load_config(_config(redis_server, route("/y", "/y", [backend])))
        await store.write(2, shared_json(good), "good")
        await _eventually(_serves(a, "/y"), within_s=1.0)
        assert (await _cluster_status(a))["error"] is None
    finally:
        await store.aclose()


async def test_a_backend_found_dead_by_one_node_is_skipped_by_the_other(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    dead = await ResettingServer().start()
    try:
        config = _config(
            redis_server,
            route("/svc", "/svc", [dead], retry_config={"max_retries": 0}),
            share_breakers=True,
        )
        config["circuit_breaker"] = {"failure_threshold": 1, "reset_timeout_s": 30}
        a = await gateway_factory(config)
        b = await gateway_factory(config)
        assert (await raw_request(a.port, "/svc")).status == 502
        assert dead.accepted == 1

        async def open_on_b() -> bool:
            backends = (await _api(b, "/api/backends")).json()["backends"]
            return bool(backends[0]["circuit_breaker"]["state"] == "open")

        await _eventually(open_on_b, within_s=1.0)
        assert (await raw_request(b.port, "/svc")).status == 503
        assert dead.accepted == 1  # B never tried it
    finally:
        await dead.stop()


def test_kairos_redis_url_creates_or_amends_the_cluster_block() -> None:
    from kairos_gateway.cluster import with_redis_url

    settings = GatewaySettings.from_env({"KAIROS_REDIS_URL": "redis://h:1/0"})
    assert settings.redis_url == "redis://h:1/0"
    bare = load_config({"version": 1, "routers": []})
    assert with_redis_url(bare, settings.redis_url).cluster == ClusterConfig(
        redis_url="redis://h:1/0"
    )
    block = load_config(
        {"version": 1, "routers": [], "cluster": {"redis_url": "redis://x", "key_prefix": "p:"}}
    )
    amended = with_redis_url(block, settings.redis_url).cluster
    assert amended is not None
    assert (amended.redis_url, amended.key_prefix) == ("redis://h:1/0", "p:")
