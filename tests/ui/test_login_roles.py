"""Login with a gateway admin token (``KAIROS_UI_LOGIN=token``) and pages that show
only what the token's role may do, with NiceGUI's simulated `User` against a real
gateway holding named tokens; the shared password mode acts as its token's role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kairos_client import Forbidden, KairosClient
from kairos_ui.auth import well_formed_token
from kairos_ui.gateway import describe
from kairos_ui.session import EndingTransport, SessionEnded
from kairos_ui.settings import SettingsError, UiSettings
from nicegui.elements.mixins.disableable_element import DisableableElement
from nicegui.storage import Storage
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, eventually, raw_request, route

from .conftest import MAIN
from .helpers import element, fill, text

ADMIN = "admin-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
ECHO = "/echo/{*rest}"


@pytest.fixture
async def role_gateway(
    file_gateway_factory: GatewayFactory, backend: EchoBackend
) -> RunningGateway:
    """A gateway with the single admin token and two named ones."""
    return await file_gateway_factory(
        {
            "version": 1,
            "routers": [route(ECHO, "/{*rest}", [backend])],
            "admin": {
                "token": ADMIN,
                "tokens": [
                    {"name": "dashboards", "token": VIEWER, "role": "viewer"},
                    {"name": "deployer", "token": OPERATOR, "role": "operator"},
                ],
            },
        }
    )


async def log_in(user: User, secret: str) -> None:
    await user.open("/routes")
    await user.should_see("Kairos admin")
    fill(user, "password", secret)
    user.find(marker="login").click()
    await user.should_see(ECHO, retries=40)


def field_inputs(user: User) -> list[Any]:
    """The Configuration page's inputs (marked ``field:<section>.<path>``)."""
    return [
        e
        for e in user.client.elements.values()
        if isinstance(e, DisableableElement) and any(m.startswith("field:") for m in e._markers)
    ]


def stored_text() -> str:
    """Everything NiceGUI's server-side storage has written to disk."""
    return "".join(p.read_text() for p in Path(Storage.path).rglob("*") if p.is_file())


async def test_a_viewer_sees_no_way_to_change_anything(
    role_gateway: RunningGateway, ui_env: Any
) -> None:
    ui_env(role_gateway.url, KAIROS_UI_LOGIN="token")
    async with user_simulation(main_file=MAIN) as user:
        await log_in(user, VIEWER)
        assert text(user, "whoami") == "dashboards · viewer"
        await user.should_not_see(marker="add-route")
        await user.should_not_see(marker=f"edit:{ECHO}")
        await user.should_not_see(marker=f"delete:{ECHO}")
        page = json.dumps([e._props for e in user.client.elements.values()], default=str)
        assert VIEWER not in page

        await user.open("/config")
        await user.should_see("JWT authentication")
        await eventually(lambda: len(field_inputs(user)) > 5)
        assert not any(e.enabled for e in field_inputs(user))
        for marker in ("save-jwt", "save-rate_limit", "save-cors", "reload-config"):
            await user.should_not_see(marker=marker)

        # The session is known server-side (by name), the token is never stored.
        await eventually(lambda: "dashboards" in stored_text())
        assert VIEWER not in stored_text()

        await user.open("/logout")
        await user.should_see("Kairos admin")
        await user.open("/config")
        await user.should_see("Admin token")  # logged out: back to the login


async def test_an_operator_adds_routes_but_edits_no_settings(
    role_gateway: RunningGateway, backend: EchoBackend, ui_env: Any
) -> None:
    ui_env(role_gateway.url, KAIROS_UI_LOGIN="token")
    async with user_simulation(main_file=MAIN) as user:
        await log_in(user, OPERATOR)
        user.find(marker="add-route").click()
        await user.should_see("Add route")
        fill(user, "field:external_path", "/ops/{id}")
        fill(user, "field:internal_path", "/inner/{id}")
        fill(user, "field:methods", ["GET"])
        fill(user, "field:backends[0].host", "http://127.0.0.1")
        fill(user, "field:backends[0].port", float(backend.port))
        user.find(marker="save").click()
        await user.should_see("Saved /ops/{id}", retries=40)
        assert (await raw_request(role_gateway.port, "/ops/7")).status == 200

        await user.open("/config")
        await user.should_see("JWT authentication")
        await eventually(lambda: len(field_inputs(user)) > 5)
        assert not any(e.enabled for e in field_inputs(user))
        await user.should_not_see(marker="save-jwt")
        await user.should_see(marker="reload-config")


async def test_a_wrong_token_is_refused_with_a_readable_message(
    role_gateway: RunningGateway, ui_env: Any
) -> None:
    ui_env(role_gateway.url, KAIROS_UI_LOGIN="token")
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/routes")
        fill(user, "password", "not-a-token-the-gateway-knows")
        user.find(marker="login").click()
        await user.should_see("does not accept this token", retries=40)
        assert element(user, "password").value == ""
        fill(user, "password", "two words")
        user.find(marker="login").click()
        await user.should_see("That is not an admin token.", retries=40)
        await user.open("/routes")
        await user.should_see("Admin token")  # still not logged in


@pytest.mark.parametrize(("token", "can_change"), [(ADMIN, True), (VIEWER, False)])
async def test_the_password_login_acts_as_its_tokens_role(
    role_gateway: RunningGateway, ui_env: Any, token: str, can_change: bool
) -> None:
    ui_env(role_gateway.url, KAIROS_UI_PASSWORD="correct horse", KAIROS_ADMIN_TOKEN=token)
    async with user_simulation(main_file=MAIN) as user:
        await log_in(user, "correct horse")
        if can_change:
            await user.should_see(marker="add-route")
        else:
            await user.should_not_see(marker="add-route")


async def test_a_refusal_names_the_role_needed(role_gateway: RunningGateway) -> None:
    async with KairosClient(role_gateway.url, token=VIEWER) as client:
        with pytest.raises(Forbidden) as refused:
            await client.reload()
    assert describe(refused.value, role_gateway.url) == (
        "Not allowed (403): this call needs the operator role; "
        "the token 'dashboards' has the viewer role."
    )


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"KAIROS_UI_LOGIN": "sso"}, "KAIROS_UI_LOGIN must be one of none, password, token"),
        ({"KAIROS_UI_LOGIN": "password"}, "needs KAIROS_UI_PASSWORD"),
        ({"KAIROS_UI_LOGIN": "token", "KAIROS_UI_PASSWORD": "x"}, "not used with"),
    ],
)
def test_login_settings_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        UiSettings.from_env(env)


def test_token_login_may_serve_a_public_address() -> None:
    settings = UiSettings.from_env({"KAIROS_UI_HOST": "0.0.0.0", "KAIROS_UI_LOGIN": "token"})
    assert settings.login_required
    assert settings.token_login


@pytest.mark.parametrize(
    ("token", "ok"),
    [(VIEWER, True), ("", False), ("a b", False), ("line\nbreak", False), ("é" * 20, False)],
)
def test_well_formed_tokens(token: str, ok: bool) -> None:
    assert well_formed_token(token) is ok


async def test_a_logged_out_client_refuses_every_call(role_gateway: RunningGateway) -> None:
    # A page may still hold the client of a session that ended: its token is dead.
    client = KairosClient(role_gateway.url, token=VIEWER, transport=EndingTransport())
    assert (await client.whoami()).name == "dashboards"
    await client.aclose()
    with pytest.raises(SessionEnded):
        await client.list_routes()
    with pytest.raises(SessionEnded):
        async with client.events():
            pass
