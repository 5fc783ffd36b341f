"""`kairos routes show/update/delete NAME` and `kairos routes list --tag T`."""

from __future__ import annotations

from kairos_core import derived_route_id

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory


async def test_routes_by_name_and_by_tag(file_gateway_factory: GatewayFactory) -> None:
    config = {
        "version": 1,
        "hot_reload": False,
        "routers": [
            route_data("/users/{id}", "/u/{id}", 9, name="users", tags=["team-a", "public"]),
            route_data("/orders", "/o", 9, tags=["team-a"]),
            route_data("/static/{*p}", "/s/{*p}", 9),
        ],
    }
    gw = await file_gateway_factory(config)
    orders = derived_route_id(["GET"], "/orders")

    listed = await kairos("routes", "list", "--tag", "team-a", url=gw.url)
    assert listed.code == 0, listed.stderr
    assert "users" in listed.stdout
    assert orders in listed.stdout
    assert "/static" not in listed.stdout
    assert "2 routes;" in listed.stdout
    both = (
        await kairos("--json", "routes", "list", "--tag", "team-a", "--tag", "public", url=gw.url)
    ).json()
    assert both["ids"] == ["users"]
    assert [r["external_path"] for r in both["routes"]] == ["/users/{id}"]

    shown = await kairos("--json", "routes", "show", "users", url=gw.url)
    assert shown.json()["tags"] == ["team-a", "public"]
    derived = await kairos("routes", "show", orders, url=gw.url)
    assert f"{orders} (derived)" in derived.stdout

    updated = await kairos(
        "routes", "update", "users", "--internal-path", "/v2/{id}", "--tag", "gone", url=gw.url
    )
    assert updated.code == 0, updated.stderr
    route = gw.gateway.runtime.snapshot.config.routers[0]
    assert (route.name, route.internal_path, route.tags) == ("users", "/v2/{id}", ["gone"])

    added = await kairos(
        "routes",
        "add",
        "-n",
        "shop",
        "-e",
        "/shop",
        "-i",
        "/shop",
        "-m",
        "GET",
        "-b",
        "127.0.0.1:9",
        url=gw.url,
    )
    assert added.code == 0, added.stderr
    twice = await kairos(
        "routes",
        "add",
        "-n",
        "shop",
        "-e",
        "/shop2",
        "-i",
        "/s",
        "-m",
        "GET",
        "-b",
        "127.0.0.1:9",
        url=gw.url,
    )
    assert twice.code == 4
    assert "named 'shop' exists already" in twice.stderr

    gone = await kairos("routes", "delete", orders, url=gw.url)
    assert gone.code == 0, gone.stderr
    missing = await kairos("routes", "show", orders, url=gw.url)
    assert missing.code == 4
    assert f"no route with the name or id '{orders}'" in missing.stderr
    assert [r.id for r in gw.gateway.runtime.snapshot.config.routers] == [
        "users",
        derived_route_id(["GET"], "/static/{*p}"),
        "shop",
    ]
