"""Errors in the editors, against a real gateway: on their fields, in the gateway's
words, and no API talk in what the user reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kairos_client import KairosClient
from kairos_ui.gateway import CHANGED_ON_DISK
from nicegui import ElementFilter
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, eventually, raw_request, route

from .conftest import MAIN
from .helpers import element, fill


def hidden_or_not(user: User, marker: str) -> Any:
    """The one element with ``marker``, shown or hidden (`element` finds shown ones)."""
    with user.client:
        found = list(ElementFilter(marker=marker, local_scope=False))
    assert len(found) == 1, f"{len(found)} elements marked {marker!r}"
    return found[0]


async def _edit_echo(user: User) -> None:
    await user.open("/routes")
    await user.should_see("/echo/{*rest}", retries=40)
    user.find(marker="edit:/echo/{*rest}").click()
    await user.should_see("Edit /echo/{*rest}")


async def test_port_out_of_range_is_an_error_on_the_field_not_clamped(
    user: User, ui_gateway: RunningGateway
) -> None:
    await _edit_echo(user)
    fill(user, "field:backends[0].port", 70000)
    user.find(marker="save").click()
    port = element(user, "field:backends[0].port")
    await eventually(lambda: bool(port.error))
    assert "65535" in port.error
    assert "70000" in port.error  # the value as typed, not clamped
    assert port.value == 70000
    assert (await raw_request(ui_gateway.port, "/echo/a")).status == 200  # nothing saved


async def test_rate_limit_inputs_follow_the_algorithm(user: User) -> None:
    await _edit_echo(user)
    fill(user, "field:rate_limit", "custom")
    await eventually(lambda: user.find(marker="field:rate_limit.algorithm").elements)
    window = hidden_or_not(user, "field:rate_limit.window_seconds")
    per_second = hidden_or_not(user, "field:rate_limit.requests_per_second")
    await eventually(lambda: per_second.visible and not window.visible)  # token bucket
    fill(user, "field:rate_limit.algorithm", "fixed_window")
    await eventually(lambda: window.visible)
    assert per_second.visible  # it still holds 10: shown until it is cleared


async def test_gateway_wide_rate_limit_error_in_the_gateways_words(user: User) -> None:
    await user.open("/config")
    await user.should_see("Gateway-wide rate limit", retries=40)
    user.find("Gateway-wide rate limit").click()
    window = hidden_or_not(user, "field:rate_limit.window_seconds")
    await eventually(lambda: not window.visible)  # token bucket: no window inputs
    fill(user, "field:rate_limit.requests_per_second", -1)
    user.find(marker="save-rate_limit").click()
    field = element(user, "field:rate_limit.requests_per_second")
    await eventually(lambda: field.error == "must be > 0 (got -1)")
    assert element(user, "error-rate_limit").text == ""
    fill(user, "field:rate_limit.algorithm", "sliding_window")
    await eventually(lambda: window.visible)


async def test_empty_jwt_secret_is_shown_on_the_secret_field(
    user: User, ui_gateway: RunningGateway
) -> None:
    await user.open("/config")
    await user.should_see("Verify JWTs", retries=40)
    user.find("Verify JWTs (needed by routes with auth)").click()
    user.find(marker="save-jwt").click()
    secret = element(user, "field:jwt.secret")
    await eventually(lambda: bool(secret.error))
    assert "at least 32 bytes" in secret.error
    assert element(user, "error-jwt").text == ""  # not at the bottom of the card
    async with KairosClient(ui_gateway.url) as client:
        assert (await client.get_jwt_config()).value is None  # nothing saved


async def test_a_change_refused_for_a_hand_edit_says_what_to_do(
    file_gateway_factory: GatewayFactory, backend: EchoBackend, ui_env: Any, tmp_path: Path
) -> None:
    config = {
        "version": 1,
        "hot_reload": False,
        "routers": [route("/echo/{*rest}", "/{*rest}", [backend])],
    }
    gw = await file_gateway_factory(config)
    ui_env(gw.url)
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/routes")
        await user.should_see("/echo/{*rest}", retries=40)
        edited = {**config, "routers": [*config["routers"], route("/new", "/new", [backend])]}
        (tmp_path / "config.json").write_text(json.dumps(edited))  # by hand, not reloaded
        user.find(marker="delete:/echo/{*rest}").click()
        user.find(marker="confirm-delete").click()
        await user.should_see(CHANGED_ON_DISK, retries=40)
        await user.should_not_see("/api/config/reload")
        assert (await raw_request(gw.port, "/echo/a")).status == 200


async def test_a_failed_reload_put_right_on_disk_is_not_shown_as_failing(
    user: User, ui_gateway: RunningGateway, tmp_path: Path
) -> None:
    source = tmp_path / "config.json"
    good = source.read_text()
    async with KairosClient(ui_gateway.url) as client:

        async def last_reload_failed() -> bool:
            last = (await client.config_status()).last_reload
            return last is not None and not last.ok

        source.write_text('{"version": 1, "routers": [{"external_path": "/x"}]}')
        await eventually(last_reload_failed)
        source.write_text(good)  # put back as it was: nothing to load, the failure ends
        status = await client.config_status()
        assert status.file_changed_on_disk is False

        async def failure_over() -> bool:
            return not await last_reload_failed()

        await eventually(failure_over)
    await user.open("/config")
    await user.should_see("Last reload", retries=40)
    await user.should_not_see("FAILED")


async def test_bulk_delete_is_all_or_nothing_when_the_config_changed_meanwhile(
    file_gateway_factory: GatewayFactory, backend: EchoBackend, ui_env: Any
) -> None:
    routes = [route(f"/r{i}", f"/r{i}", [backend]) for i in range(3)]
    gw = await file_gateway_factory({"version": 1, "routers": routes})
    ui_env(gw.url)
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/routes")
        await user.should_see("3 of 3 routes", retries=40)
        async with KairosClient(gw.url) as client:  # someone else, meanwhile
            await client.create_route(route("/other", "/other", [backend]))
        user.find(marker="select-all").click()
        user.find(marker="bulk-delete").click()
        await user.should_see("Delete 3 routes?")
        user.find(marker="confirm-bulk-delete").click()
        await user.should_see("The configuration changed", retries=40)
        for i in range(3):  # none of them deleted
            assert (await raw_request(gw.port, f"/r{i}")).status == 200
        user.find(marker="reload-stale").click()
        await user.should_see("4 of 4 routes", retries=40)
        assert "(3)" in element(user, "bulk-delete").text  # still chosen after the reload
