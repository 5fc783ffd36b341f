"""Password login for the admin app (on whenever ``KAIROS_UI_PASSWORD`` is set).

A middleware sends every page request without a logged-in session to ``/login``;
NiceGUI's own assets (``/_nicegui/...``) stay open so the login page can render. The
session flag lives in ``app.storage.user`` (server side, keyed by a cookie signed with
the storage secret).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from nicegui import app, ui
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .settings import UiSettings

__all__ = ["install_login", "safe_target"]

_OPEN_PREFIXES = ("/_nicegui", "/login", "/favicon.ico")
#: Seconds a wrong password waits before the answer (slows down guessing).
_FAILURE_DELAY_S = 1.0


def safe_target(target: str | None) -> str:
    """Where to go after login: a path on this app, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class _LoginRequired(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if not path.startswith(_OPEN_PREFIXES) and not app.storage.user.get("authenticated"):
            return RedirectResponse(f"/login?redirect_to={quote(path, safe='/')}")
        return await call_next(request)


def install_login(settings: UiSettings) -> None:
    """Require the password for every page, and serve ``/login``."""
    password = settings.password
    assert password, "install_login needs a password"
    app.add_middleware(_LoginRequired)

    @ui.page("/login", title="Kairos · log in")
    def login(redirect_to: str = "/") -> None:
        target = safe_target(redirect_to)
        if app.storage.user.get("authenticated"):
            ui.navigate.to(target)
            return

        async def attempt() -> None:
            given = secret.value or ""
            if hmac.compare_digest(given.encode(), password.encode()):
                app.storage.user.update({"authenticated": True})
                ui.navigate.to(target)
                return
            await asyncio.sleep(_FAILURE_DELAY_S)
            secret.value = ""
            ui.notify("Wrong password", type="negative")

        with ui.card().classes("absolute-center w-80"):
            ui.label("Kairos admin").classes("text-lg font-bold")
            secret = ui.input("Password", password=True).props("autofocus").mark("password")
            secret.on("keydown.enter", attempt)
            ui.button("Log in", on_click=attempt).mark("login")
