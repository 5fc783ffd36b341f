"""Page logic with NiceGUI's simulated `User`, against a real in-process gateway
(running from a config file) and a real echo backend."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from kairos_client import KairosClient
from kairos_core import load_config
from kairos_gateway import AccessLog, Gateway, GatewaySettings
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation
from tornado.netutil import bind_sockets

from tests.conftest import RunningGateway
from tests.support import LOOPBACK, EchoBackend, eventually, raw_request, route, unused_port

from .conftest import MAIN
from .helpers import element, fill, text

SECRET = "s3cr3t-value-that-is-long-enough-0123456789"


async def test_dashboard_cards_follow_traffic(user: User, ui_gateway: RunningGateway) -> None:
    await user.open("/")
    await user.should_see("Dashboard")
    await eventually(lambda: text(user, "stat-config_version") == "1")
    before = text(user, "stat-total_requests")
    for _ in range(3):
        assert (await raw_request(ui_gateway.port, "/echo/x")).status == 200
    await raw_request(ui_gateway.port, "/nowhere")
    await eventually(lambda: text(user, "stat-total_requests") != before)
    # The 404 matched no route: counted apart (test_page_dashboard), not as a 4xx here.
    await eventually(lambda: text(user, "unmatched-requests") == "1")
    assert text(user, "stat-client_errors") == "0"
    assert text(user, "stat-uptime").endswith("s")
    assert element(user, "chart-rps").options["series"][0]["name"] == "req/s"


async def test_banner_when_gateway_is_down_then_recovers(ui_env: Any) -> None:
    port = unused_port()
    ui_env(f"http://{LOOPBACK}:{port}")
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/")
        await user.should_see("cannot be reached", retries=40)
        gateway = Gateway(
            load_config({"version": 1, "routers": []}),
            GatewaySettings(),
            access_log=AccessLog(io.BytesIO(), "json"),
        )
        await gateway.start(bind_sockets(port, LOOPBACK))
        try:
            await user.should_not_see("cannot be reached", retries=60)
            await eventually(lambda: text(user, "stat-config_version") == "1")
        finally:
            await gateway.stop(drain_timeout_s=1)


async def test_routes_table_and_search(user: User, file_gateway_factory: Any) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    await user.should_see("1 of 1 routes")
    fill(user, "search", "nothing-like-this")
    await user.should_see("0 of 1 routes")
    fill(user, "search", "echo")
    await user.should_see("1 of 1 routes")


async def _open_editor(user: User) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    user.find(marker="add-route").click()
    await user.should_see("Add route")


async def test_add_route_serves_traffic_at_once(
    user: User, ui_gateway: RunningGateway, backend: EchoBackend, tmp_path: Path
) -> None:
    await _open_editor(user)
    fill(user, "field:external_path", "/new/{id}")
    fill(user, "field:internal_path", "/inner/{id}")
    fill(user, "field:methods", ["GET", "POST"])
    fill(user, "field:backends[0].host", "http://127.0.0.1")
    fill(user, "field:backends[0].port", float(backend.port))
    fill(user, "field:backends[0].health_check_path", "/health")
    user.find(marker="save").click()
    await user.should_see("Saved /new/{id}", retries=40)
    response = await raw_request(ui_gateway.port, "/new/7")
    assert response.status == 200
    assert response.json()["uri"] == "/inner/7"
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["routers"][-1]["backends"][0]["health_check_path"] == "/health"


async def test_invalid_route_shows_field_errors_and_saves_nothing(
    user: User, ui_gateway: RunningGateway
) -> None:
    await _open_editor(user)
    fill(user, "field:external_path", "/health")
    fill(user, "field:internal_path", "/x")
    fill(user, "field:backends[0].host", "ftp://example")
    fill(user, "field:backends[0].port", 80.0)
    user.find(marker="save").click()
    await user.should_see("reserved path", retries=40)
    await user.should_see("must start with http:// or https://")
    assert element(user, "field:external_path").error.startswith("reserved path")
    async with KairosClient(ui_gateway.url) as client:
        routes = (await client.list_routes()).value.routes
    assert [r.external_path for r in routes] == ["/echo/{*rest}"]


async def test_unparsable_json_field_is_reported_locally(user: User) -> None:
    await _open_editor(user)
    fill(user, "field:required_claims", "{not json")
    user.find(marker="check").click()
    await user.should_see("not valid JSON", retries=20)


async def test_edit_route(user: User, ui_gateway: RunningGateway) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    user.find(marker="edit:/echo/{*rest}").click()
    await user.should_see("Edit /echo/{*rest}")
    fill(user, "field:internal_path", "/v2/{*rest}")
    fill(user, "field:backends[0].weight", 3.0)
    user.find(marker="save").click()
    await user.should_see("→ /v2/{*rest}", retries=40)
    response = await raw_request(ui_gateway.port, "/echo/a")
    assert response.json()["uri"] == "/v2/a"


async def test_delete_asks_first(user: User, ui_gateway: RunningGateway) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    user.find(marker="delete:/echo/{*rest}").click()
    await user.should_see("Delete the route /echo/{*rest}?")
    user.find(marker="cancel-delete").click()
    assert (await raw_request(ui_gateway.port, "/echo/a")).status == 200
    user.find(marker="delete:/echo/{*rest}").click()
    user.find(marker="confirm-delete").click()
    await user.should_see("0 of 0 routes", retries=40)
    assert (await raw_request(ui_gateway.port, "/echo/a")).status == 404


async def test_stale_config_offers_reload(
    user: User, ui_gateway: RunningGateway, backend: EchoBackend
) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    async with KairosClient(ui_gateway.url) as client:  # someone else, meanwhile
        await client.create_route(route("/other", "/other", [backend]))
    user.find(marker="delete:/echo/{*rest}").click()
    user.find(marker="confirm-delete").click()
    await user.should_see("The configuration changed", retries=40)
    assert (await raw_request(ui_gateway.port, "/echo/a")).status == 200
    user.find(marker="reload-stale").click()
    await user.should_see("/other", retries=40)


async def test_backends_and_probes(user: User, backend: EchoBackend) -> None:
    await user.open("/backends")
    await user.should_see("healthy · v", retries=40)
    await user.should_see("alive")
    await eventually(lambda: element(user, "backends-table").rows != [])
    row = element(user, "backends-table").rows[0]
    assert row["address"] == backend.url
    assert row["breaker"] == "closed"
    assert row["routes"] == "/echo/{*rest}"


async def test_config_secret_is_write_only(
    user: User, ui_gateway: RunningGateway, tmp_path: Path
) -> None:
    async with KairosClient(ui_gateway.url) as client:
        await client.update_jwt_config({"secret": SECRET})
    await user.open("/config")
    await user.should_see("set: type to replace it", retries=40)
    assert element(user, "field:jwt.secret").value == ""
    await user.should_not_see(SECRET)
    # Saving another JWT setting keeps the secret the UI never saw.
    fill(user, "field:jwt.issuer", "https://issuer.example")
    user.find(marker="save-jwt").click()
    await user.should_see("JWT authentication saved", retries=40)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["jwt"]["secret"] == SECRET
    assert saved["jwt"]["issuer"] == "https://issuer.example"


async def test_config_field_errors_and_save(user: User, ui_gateway: RunningGateway) -> None:
    await user.open("/config")
    await user.should_see("Gateway-wide CORS policy", retries=40)
    user.find("Gateway-wide CORS policy").click()
    fill(user, "field:cors.allowed_origins", "not-an-origin")
    user.find(marker="save-cors").click()
    await user.should_see("is not an origin", retries=20)
    fill(user, "field:cors.allowed_origins", "https://app.example")
    user.find(marker="save-cors").click()
    await user.should_see("CORS saved", retries=40)
    async with KairosClient(ui_gateway.url) as client:
        cors = (await client.get_cors_config()).value
    assert cors is not None
    assert cors.allowed_origins == ["https://app.example"]


async def test_reload_shows_the_last_error(
    user: User, ui_gateway: RunningGateway, tmp_path: Path
) -> None:
    await user.open("/config")
    await user.should_see("none since start-up", retries=40)
    source = tmp_path / "config.json"
    source.write_text('{"version": 1, "routers": [{"external_path": "/x"}]}')
    user.find(marker="reload-config").click()
    await user.should_see("FAILED", retries=60)
    await user.should_see("routers[0].internal_path")


async def test_metrics_tables_and_ranges(user: User, ui_gateway: RunningGateway) -> None:
    for _ in range(3):
        await raw_request(ui_gateway.port, "/echo/x")
    await user.open("/metrics")
    await eventually(lambda: element(user, "route-table").rows != [])
    routes = {row["route"]: row for row in element(user, "route-table").rows}
    assert routes["/echo/{*rest}"]["requests"] == 3
    choice = element(user, "range")
    for label in ("15 min", "6 h", "24 h"):
        choice.value = label
        await eventually(lambda: element(user, "metrics-rps").options["series"] is not None)
    await user.should_not_see("cannot be reached")


async def test_metrics_per_route_charts_come_from_the_gateway(
    gateway_factory: Any, backend: EchoBackend, ui_env: Any
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/echo/{*rest}", "/{*rest}", [backend])]},
        metrics_interval_s=0.02,
        metrics_history_step_s=0.05,
        metrics_retention_s=30,
    )
    for _ in range(4):
        assert (await raw_request(gw.port, "/echo/x")).status == 200
    sampler = gw.gateway.management.sampler
    target = sampler.label_steps_taken + 1
    async with asyncio.timeout(10):  # the traffic is in the gateway's per-route history
        while sampler.label_steps_taken < target:
            await sampler.wait_for(sampler.samples_taken + 1)
    ui_env(gw.url)
    async with user_simulation(main_file=MAIN) as user:  # the UI starts only now
        await user.open("/metrics")

        def series(marker: str) -> dict[str, list[Any]]:
            options = element(user, marker).options
            return {s["name"]: s["data"] for s in options["series"]}

        def served(marker: str, name: str) -> bool:
            return any(value for _, value in series(marker).get(name, []))

        await eventually(lambda: served("route-rps", "/echo/{*rest}"))
        assert served("route-p95", "/echo/{*rest}")
        await eventually(lambda: served("backend-rps", backend.url))
        assert served("backend-p95", backend.url)
        await user.should_not_see("cannot be reached")


async def test_login_required_with_password(ui_gateway: RunningGateway, ui_env: Any) -> None:
    ui_env(ui_gateway.url, KAIROS_UI_PASSWORD="correct horse")
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/routes")
        await user.should_see("Kairos admin")
        fill(user, "password", "wrong")
        user.find(marker="login").click()
        await user.should_see("Wrong password", retries=30)
        fill(user, "password", "correct horse")
        user.find(marker="login").click()
        await user.should_see("/echo/{*rest}", retries=40)
