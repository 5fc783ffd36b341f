"""The audit trail and kept versions of a cluster: kept in its Redis, one entry per
change, the same on every node, and a rollback on any node to a version another node
recorded (a real redis-server per test; the nodes are in-process gateways)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import GatewayFactory, RunningGateway
from tests.redis_server import RedisServer
from tests.support import EchoBackend, api_call, eventually, raw_request, route

SECRET = "a-jwt-secret-only-the-versions-may-hold"


def get_route(external: str, backend: EchoBackend) -> dict[str, Any]:
    return route(external, external, [backend], methods=["GET"])


def cluster_config(redis: RedisServer, *routes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), "cluster": {"redis_url": redis.url}}


async def read(node: RunningGateway, path: str) -> Any:
    resp = await api_call(node.port, "GET", path)
    assert resp.status == 200, resp.body
    return resp.json()


async def reaches(node: RunningGateway, path: str, backend: EchoBackend) -> bool:
    resp = await raw_request(node.port, path)
    return resp.status == 200 and resp.json()["backend"] == backend.name


async def test_a_change_on_one_node_is_recorded_once_and_read_alike_on_every_node(
    redis_server: RedisServer,
    gateway_factory: GatewayFactory,
    file_gateway_factory: GatewayFactory,
    backend: EchoBackend,
    tmp_path: Path,
    redis: Any,
) -> None:
    a = await file_gateway_factory(cluster_config(redis_server, route("/a", "/a", [backend])))
    b = await gateway_factory({"version": 1, "routers": []}, redis_url=redis_server.url)
    seed = (await api_call(a.port, "GET", "/api/config")).header("ETag").strip('"')

    created = await api_call(a.port, "POST", "/api/routes", get_route("/b", backend))
    assert created.status == 201
    jwt = await api_call(a.port, "PUT", "/api/config/jwt", {"secret": SECRET})
    assert jwt.status == 200, jwt.body
    live = jwt.header("ETag").strip('"')
    await eventually(lambda: reaches(b, "/b", backend), timeout=2.0)

    trail = await read(b, "/api/audit")
    assert trail == await read(a, "/api/audit")  # one trail, whichever node answers
    entries = trail["entries"]
    assert [e["changes"] for e in entries] == [
        [{"setting": "jwt", "change": "added"}],
        [{"route": "GET /b", "change": "added"}],
    ]
    assert [(e["id"], e["actor"], e["trigger"]) for e in entries] == [
        (2, "loopback", "api"),
        (1, "loopback", "api"),
    ]
    assert entries[1]["previous_version"] == seed
    assert entries[0]["version"] == live
    assert entries[0]["previous_version"] == entries[1]["version"]
    # Paging works on the shared trail as on a node's own.
    first = await read(b, "/api/audit?limit=1")
    assert [e["id"] for e in first["entries"]] == [2]
    assert first["next"] == 2
    rest = await read(b, "/api/audit?limit=1&before=2")
    assert ([e["id"] for e in rest["entries"]], rest["next"]) == ([1], None)

    versions = (await read(b, "/api/config/versions"))["versions"]
    assert versions == (await read(a, "/api/config/versions"))["versions"]
    assert [v["version"] for v in versions] == [live, entries[1]["version"], seed]
    assert [v["live"] for v in versions] == [True, False, False]
    assert all(v["saved_at"] for v in versions)

    # The entries name what changed, never a value; the node's file holds no trail.
    raw = b"".join(await redis.lrange("kairos:audit", 0, -1))
    assert SECRET.encode() not in raw
    assert not (tmp_path / ".kairos-audit").exists()


async def test_a_rollback_on_one_node_restores_a_version_recorded_by_another(
    redis_server: RedisServer,
    gateway_factory: GatewayFactory,
    backend_factory: Any,
) -> None:
    old = await backend_factory("old")
    new = await backend_factory("new")
    a = await gateway_factory(cluster_config(redis_server, route("/svc", "/svc", [old])))
    b = await gateway_factory(cluster_config(redis_server))
    await eventually(lambda: reaches(b, "/svc", old), timeout=2.0)
    target = (await api_call(a.port, "GET", "/api/config")).header("ETag")

    moved = await api_call(a.port, "PUT", "/api/routes/%2Fsvc", route("/svc", "/svc", [new]))
    assert moved.status == 200, moved.body
    added = await api_call(a.port, "POST", "/api/routes", get_route("/extra", new))
    assert added.status == 201
    for node in (a, b):
        await eventually(lambda node=node: reaches(node, "/extra", new), timeout=2.0)

    stale = await api_call(
        b.port, "POST", "/api/config/rollback", {"version": target}, headers=[("If-Match", target)]
    )
    assert stale.status == 412
    missing = await api_call(b.port, "POST", "/api/config/rollback", {"version": "0" * 20})
    assert missing.status == 404

    current = (await api_call(b.port, "GET", "/api/config")).header("ETag")
    rolled = await api_call(
        b.port, "POST", "/api/config/rollback", {"version": target}, headers=[("If-Match", current)]
    )
    assert rolled.status == 200, rolled.body
    assert rolled.json() == {"restored": target.strip('"'), "version": target.strip('"')}
    for node in (a, b):
        await eventually(lambda node=node: reaches(node, "/svc", old), timeout=2.0)
        await eventually(lambda node=node: _status_is(node, "/extra", 404), timeout=2.0)

    entries = (await read(a, "/api/audit"))["entries"]
    assert entries == (await read(b, "/api/audit"))["entries"]
    assert [e["trigger"] for e in entries] == ["rollback", "api", "api"]
    assert entries[0]["version"] == target.strip('"')
    assert {"route": "GET /extra", "change": "removed"} in entries[0]["changes"]
    versions = (await read(a, "/api/config/versions"))["versions"]
    assert versions[0] == {**versions[0], "version": target.strip('"'), "live": True}
    assert len(versions) == 3  # the restored version moved up, not kept twice


async def _status_is(node: RunningGateway, path: str, status: int) -> bool:
    return (await raw_request(node.port, path)).status == status


async def test_without_redis_the_trail_answers_503_and_nothing_goes_unrecorded(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(cluster_config(redis_server, route("/a", "/a", [backend])))
    seed = (await api_call(a.port, "GET", "/api/config")).header("ETag")
    redis_server.kill()

    for path in ("/api/audit", "/api/config/versions"):
        down = await api_call(a.port, "GET", path)
        assert down.status == 503, down.body
        problem = down.json()
        assert problem["type"] == "service_unavailable"
        assert "cluster's Redis" in problem["detail"]
    rollback = await api_call(a.port, "POST", "/api/config/rollback", {"version": seed})
    assert rollback.status == 503
    # A change is refused too (it could not reach the other nodes), so the trail never
    # misses one; the data path keeps serving.
    refused = await api_call(a.port, "POST", "/api/routes", get_route("/b", backend))
    assert refused.status == 503
    assert (await raw_request(a.port, "/a")).status == 200

    # Back, but empty (no persistence): the node puts its version back, kept as a version.
    redis_server.start()

    async def restored() -> bool:
        resp = await api_call(a.port, "GET", "/api/config/versions")
        return resp.status == 200 and bool(resp.json()["versions"])

    await eventually(restored, timeout=5.0)
    versions = (await read(a, "/api/config/versions"))["versions"]
    assert [(v["version"], v["live"]) for v in versions] == [(seed.strip('"'), True)]
    created = await api_call(a.port, "POST", "/api/routes", get_route("/b", backend))
    assert created.status == 201
    entries = (await read(a, "/api/audit"))["entries"]
    assert [e["changes"] for e in entries] == [[{"route": "GET /b", "change": "added"}]]
    assert entries[0]["previous_version"] == seed.strip('"')


async def test_a_read_of_the_secrets_in_clear_is_in_the_clusters_trail(
    redis_server: RedisServer, gateway_factory: GatewayFactory, backend: EchoBackend
) -> None:
    a = await gateway_factory(cluster_config(redis_server, route("/a", "/a", [backend])))
    b = await gateway_factory({"version": 1, "routers": []}, redis_url=redis_server.url)
    clear = await api_call(a.port, "GET", "/api/config?secrets=clear")
    assert clear.status == 200, clear.body
    entries = (await read(b, "/api/audit"))["entries"]
    assert [(e["trigger"], e["changes"]) for e in entries] == [("secrets_read", [])]
    assert entries == (await read(a, "/api/audit"))["entries"]
    redis_server.stop()
    refused = await api_call(a.port, "GET", "/api/config?secrets=clear")
    assert refused.status == 503  # never handed out unrecorded
    redis_server.start()
