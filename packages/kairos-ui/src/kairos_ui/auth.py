"""Login for the admin app: the shared password (``KAIROS_UI_PASSWORD``), each
person's own gateway admin token (``KAIROS_UI_LOGIN=token``), or named users with
password hashes acting with tokens the UI holds (``KAIROS_UI_USERS``, see `users`).

A middleware sends every page request without a logged-in session to ``/login``;
NiceGUI's own assets (``/_nicegui/...``) stay open so the login page can render. The
password session's flag lives in ``app.storage.user`` (server side, keyed by a cookie
signed with the storage secret). A token is checked with the gateway
(`GET /api/whoami`, which also gives its name and role) and then kept in this
process's memory only (`session.Sessions`). ``/logout`` ends either kind.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from kairos_client import KairosClientError, NotFound, Unauthorized
from nicegui import app, ui
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from .gateway import Gateway, describe
from .session import Sessions, session_id
from .settings import UiSettings
from .users import verify_password

__all__ = ["install_login", "safe_target", "well_formed_token"]

_OPEN_PREFIXES = ("/_nicegui", "/login", "/logout", "/favicon.ico")
#: Seconds a wrong password or token waits before the answer (slows down guessing).
_FAILURE_DELAY_S = 1.0
#: Longest token accepted from the login form.
_MAX_TOKEN_CHARS = 4096


def well_formed_token(token: str) -> bool:
    """Could ``token`` be an admin token at all (printable ASCII, no spaces, sane
    length)? Anything else is refused before it reaches an HTTP header."""
    return 0 < len(token) <= _MAX_TOKEN_CHARS and all(33 <= ord(c) <= 126 for c in token)


def safe_target(target: str | None) -> str:
    """Where to go after login: a path on this app, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class _LoginRequired(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, logged_in: Callable[[], bool]) -> None:
        super().__init__(app)
        self._logged_in = logged_in

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not path.startswith(_OPEN_PREFIXES) and not self._logged_in():
            return RedirectResponse(f"/login?redirect_to={quote(path, safe='/')}")
        return await call_next(request)


def install_login(settings: UiSettings, gateway: Gateway) -> None:
    """Require a login for every page, and serve ``/login`` and ``/logout``."""
    sessions = gateway.sessions
    password = settings.password
    assert sessions is not None or password, "install_login needs a password or token login"

    def logged_in() -> bool:
        if sessions is not None:
            return sessions.get(session_id()) is not None
        return bool(app.storage.user.get("authenticated"))

    app.add_middleware(_LoginRequired, logged_in=logged_in)

    @app.get("/logout", include_in_schema=False)
    async def logout() -> RedirectResponse:
        if sessions is not None:
            await sessions.end(session_id())
        app.storage.user.update({"authenticated": False, "name": None, "role": None})
        return RedirectResponse("/login")

    @ui.page("/login", title="Kairos · log in")
    def login(redirect_to: str = "/") -> None:
        target = safe_target(redirect_to)
        if logged_in():
            ui.navigate.to(target)
            return

        async def attempt() -> None:
            given = secret.value or ""
            secret.value = ""  # the secret does not stay in the page, right or wrong
            if sessions is not None and user_name is not None:
                refusal = await _user_login(settings, sessions, user_name.value or "", given)
            elif sessions is not None:
                refusal = await _token_login(sessions, gateway, given)
            else:
                assert password is not None
                refusal = await _password_login(gateway, password, given)
            if refusal is None:
                ui.navigate.to(target)
            else:
                ui.notify(refusal, type="negative", multi_line=True)

        what = "Admin token" if settings.token_login else "Password"
        with ui.card().classes("absolute-center w-96"):
            ui.label("Kairos admin").classes("text-lg font-bold")
            user_name = None
            if settings.login == "users":
                user_name = ui.input("User").props("autofocus").mark("user")
            focus = "" if user_name else " autofocus"
            secret = ui.input(what, password=True).props("autocomplete=off" + focus)
            secret.mark("password")
            secret.on("keydown.enter", attempt)
            if settings.token_login:
                ui.label(
                    "A token of the gateway (KAIROS_ADMIN_TOKEN or admin.tokens); its role "
                    "decides what you may do here."
                ).classes("text-xs opacity-70")
            ui.button("Log in", on_click=attempt).mark("login")


async def _password_login(gateway: Gateway, password: str, given: str) -> str | None:
    """Log in with the shared password; the refusal to show, or None."""
    if not hmac.compare_digest(given.encode(), password.encode()):
        await asyncio.sleep(_FAILURE_DELAY_S)
        return "Wrong password"
    await gateway.learn_role()
    app.storage.user.update({"authenticated": True, "role": gateway.shared_role})
    return None


async def _user_login(
    settings: UiSettings, sessions: Sessions, name: str, password: str
) -> str | None:
    """Log in as a named user (``KAIROS_UI_USERS``), acting with their token."""
    user = next((u for u in settings.users if u.name == name.strip()), None)
    # An unknown name costs a hash too (no faster "no such user"); both read the same.
    matched = await asyncio.to_thread(
        verify_password, password, None if user is None else user.password_hash
    )
    sid = session_id()
    if user is None or not matched or sid is None:
        await asyncio.sleep(_FAILURE_DELAY_S)
        return "Wrong user name or password"
    token = settings.token_of(user)
    assert token is not None  # UiSettings.check makes sure every user has one
    try:
        session = await sessions.open(sid, token)
    except Unauthorized:
        return (
            f"The gateway does not accept the token {user.token_name!r} that {user.name!r} "
            "acts with: check KAIROS_ADMIN_TOKENS on both sides."
        )
    except KairosClientError as exc:
        return describe(exc, settings.gateway_url)
    app.storage.user.update({"authenticated": True, "name": user.name, "role": session.role})
    return None


async def _token_login(sessions: Sessions, gateway: Gateway, given: str) -> str | None:
    """Log in with a gateway admin token; the refusal to show, or None."""
    token = given.strip()
    sid = session_id()
    if sid is None or not well_formed_token(token):
        await asyncio.sleep(_FAILURE_DELAY_S)
        return "That is not an admin token."
    try:
        session = await sessions.open(sid, token)
    except Unauthorized:
        await asyncio.sleep(_FAILURE_DELAY_S)
        return f"The gateway at {gateway.url} does not accept this token."
    except NotFound:
        return (
            f"The gateway at {gateway.url} cannot say who a token is (no GET /api/whoami): "
            "upgrade it, or use KAIROS_UI_PASSWORD with KAIROS_ADMIN_TOKEN."
        )
    except KairosClientError as exc:
        return describe(exc, gateway.url)
    app.storage.user.update({"authenticated": True, "name": session.name, "role": session.role})
    return None
