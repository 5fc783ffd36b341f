"""`UiSettings`: what the admin app needs to know, read from the environment once.

Built in `main()` and handed to every page explicitly; no module reads the environment
on import.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .users import SINGLE_TOKEN, UiUser, UsersError, parse_tokens, parse_users

__all__ = ["DEFAULT_GATEWAY_URL", "LOGINS", "Login", "SettingsError", "UiSettings", "is_loopback"]

#: How people log in: nobody (loopback only), with the shared password, each with a
#: gateway admin token of their own (whose role says what they may do), or as a named
#: user with a password, acting with a token the UI holds (`users`).
Login = Literal["none", "password", "token", "users"]
LOGINS: tuple[Login, ...] = ("none", "password", "token", "users")

DEFAULT_GATEWAY_URL = "http://localhost:5900"


class SettingsError(ValueError):
    """A setting is missing, malformed or unsafe; the message names the variable."""


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class UiSettings:
    """How the admin app listens and which gateway it manages.

    ``login`` ``"password"``: every page needs ``password``; ``"token"``: every page
    needs a login with a gateway admin token. A login is required when ``host`` is not
    a loopback address (`check` refuses to start open on a public address).
    """

    host: str = "127.0.0.1"
    port: int = 3000
    gateway_url: str = DEFAULT_GATEWAY_URL
    admin_token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    login: Login = "none"
    #: ``login="users"``: who may log in, and the gateway tokens they act with by name.
    users: tuple[UiUser, ...] = ()
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    #: Seconds between two polls of the gateway on live pages.
    poll_interval_s: float = 2.0
    #: Seconds each call to the gateway may take.
    gateway_timeout_s: float = 5.0
    #: Signs the login session cookie; random per process unless given.
    storage_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @property
    def login_required(self) -> bool:
        return self.personal_login or bool(self.password)

    @property
    def token_login(self) -> bool:
        return self.login == "token"

    @property
    def personal_login(self) -> bool:
        """Does each login get its own gateway client (token or named user)?"""
        return self.login in ("token", "users")

    def token_of(self, user: UiUser) -> str | None:
        """The gateway token ``user`` acts with."""
        if user.token_name == SINGLE_TOKEN and SINGLE_TOKEN not in self.tokens:
            return self.admin_token
        return self.tokens.get(user.token_name)

    def check(self) -> UiSettings:
        """Raise `SettingsError` for a setting that is invalid or unsafe; else self."""
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"KAIROS_UI_PORT must be 1-65535, got {self.port}")
        if not self.gateway_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"KAIROS_GATEWAY_URL must be an http:// or https:// URL, got {self.gateway_url!r}"
            )
        if self.login == "password" and not self.password:
            raise SettingsError("KAIROS_UI_LOGIN=password needs KAIROS_UI_PASSWORD")
        if self.personal_login and self.password:
            raise SettingsError(
                f"KAIROS_UI_PASSWORD is not used with KAIROS_UI_LOGIN={self.login} (each "
                "person logs in on their own): unset one of them"
            )
        if self.login == "users":
            if not self.users:
                raise SettingsError("KAIROS_UI_LOGIN=users needs KAIROS_UI_USERS")
            for user in self.users:
                if self.token_of(user) is None:
                    raise SettingsError(
                        f"KAIROS_UI_USERS: user {user.name!r} acts with the token "
                        f"{user.token_name!r}, which KAIROS_ADMIN_TOKENS does not name"
                    )
        if not is_loopback(self.host) and not self.login_required:
            raise SettingsError(
                f"refusing to serve the admin UI on {self.host}, which is not a loopback "
                "address, without a login: set KAIROS_UI_PASSWORD or KAIROS_UI_LOGIN=token "
                "(or KAIROS_UI_HOST=127.0.0.1)"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UiSettings:
        """Settings from ``KAIROS_UI_*``, ``KAIROS_GATEWAY_URL`` and ``KAIROS_ADMIN_TOKEN``
        (``KAIROS_UI_LOGIN`` defaults to ``password`` when ``KAIROS_UI_PASSWORD`` is set)."""
        env = os.environ if env is None else env
        raw_port = env.get("KAIROS_UI_PORT") or "3000"
        try:
            port = int(raw_port)
        except ValueError:
            raise SettingsError(f"KAIROS_UI_PORT must be a port number, got {raw_port!r}") from None
        secret = env.get("KAIROS_UI_STORAGE_SECRET")
        password = env.get("KAIROS_UI_PASSWORD") or None
        try:
            users = parse_users(env.get("KAIROS_UI_USERS") or "")
            tokens = parse_tokens(env.get("KAIROS_ADMIN_TOKENS") or "")
        except UsersError as exc:
            raise SettingsError(str(exc)) from None
        default = "users" if users else "password" if password else "none"
        login = (env.get("KAIROS_UI_LOGIN") or default).lower()
        if login not in LOGINS:
            choices = ", ".join(LOGINS)
            raise SettingsError(f"KAIROS_UI_LOGIN must be one of {choices}, got {login!r}")
        return cls(
            host=env.get("KAIROS_UI_HOST") or "127.0.0.1",
            port=port,
            gateway_url=(env.get("KAIROS_GATEWAY_URL") or DEFAULT_GATEWAY_URL).rstrip("/"),
            admin_token=env.get("KAIROS_ADMIN_TOKEN") or None,
            password=password,
            login=login,
            users=users,
            tokens=tokens,
            poll_interval_s=_float(env, "KAIROS_UI_POLL_INTERVAL", 2.0, 0.2, 3600),
            gateway_timeout_s=_float(env, "KAIROS_UI_GATEWAY_TIMEOUT", 5.0, 0.1, 120),
            **({"storage_secret": secret} if secret else {}),
        ).check()
