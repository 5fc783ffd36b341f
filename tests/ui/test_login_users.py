"""Named UI users (``KAIROS_UI_USERS``) with PBKDF2 password hashes, each acting with a
gateway token the UI holds (``KAIROS_ADMIN_TOKENS``), against a real gateway."""

from __future__ import annotations

from typing import Any

import pytest
from kairos_ui.settings import SettingsError, UiSettings
from kairos_ui.users import UsersError, hash_password, parse_users, verify_password
from nicegui.testing.user_simulation import user_simulation

from tests.conftest import RunningGateway

from .conftest import MAIN
from .helpers import fill, text
from .test_login_roles import ECHO, VIEWER, role_gateway

__all__ = ["role_gateway"]  # the fixture, shared with the token login tests

#: Few iterations keep the tests fast; real hashes use `DEFAULT_ITERATIONS`.
ALICE = hash_password("alice pass", iterations=1_000)


def test_hashes_verify_only_their_password() -> None:
    assert verify_password("alice pass", ALICE)
    assert not verify_password("alice pas", ALICE)
    assert not verify_password("alice pass", None)  # an unknown user
    assert not verify_password("alice pass", "pbkdf2_sha256$1000$AAAA$short")
    assert hash_password("x", iterations=1_000) != hash_password("x", iterations=1_000)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("alice", "entry 1 must be name:hash:token-name"),
        (f"alice:{ALICE}:ops,alice:{ALICE}:ops", "entry 2: the name 'alice' is used twice"),
        ("alice:plain-text-password:ops", "entry 1 (alice): the hash must be pbkdf2_sha256"),
    ],
)
def test_bad_user_entries_are_named_never_echoed(raw: str, message: str) -> None:
    with pytest.raises(UsersError) as caught:
        parse_users(raw)
    assert message in str(caught.value)
    assert "plain-text-password" not in str(caught.value)


def test_a_user_needs_a_token_the_ui_holds() -> None:
    env = {"KAIROS_UI_USERS": f"alice:{ALICE}:deployer"}
    with pytest.raises(SettingsError, match="'deployer', which KAIROS_ADMIN_TOKENS does not"):
        UiSettings.from_env(env)
    settings = UiSettings.from_env(
        {**env, "KAIROS_ADMIN_TOKENS": f"deployer:operator:{VIEWER}", "KAIROS_UI_HOST": "::"}
    )
    assert (settings.login, settings.personal_login) == ("users", True)
    assert VIEWER not in repr(settings)


async def test_a_user_logs_in_and_acts_with_their_token(
    role_gateway: RunningGateway, ui_env: Any
) -> None:
    ui_env(
        role_gateway.url,
        KAIROS_UI_USERS=f"alice:{ALICE}:dashboards",
        KAIROS_ADMIN_TOKENS=f"dashboards:viewer:{VIEWER}",
    )
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/routes")
        fill(user, "user", "alice")
        fill(user, "password", "wrong")
        user.find(marker="login").click()
        await user.should_see("Wrong user name or password", retries=40)
        fill(user, "user", "alice")
        fill(user, "password", "alice pass")
        user.find(marker="login").click()
        await user.should_see(ECHO, retries=40)
        assert text(user, "whoami") == "alice · viewer"  # the role the gateway gives
        await user.should_not_see(marker="add-route")
