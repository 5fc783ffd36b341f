"""Wiring: settings -> pages -> server. `main()` is the ``kairos-ui`` command."""

from __future__ import annotations

import logging
import sys

from nicegui import app, ui

from .auth import install_login
from .gateway import Gateway
from .pages import audit, backends, config, dashboard, metrics, plugins, routes
from .settings import SettingsError, UiSettings

__all__ = ["build", "main"]

log = logging.getLogger("kairos_ui")


def build(settings: UiSettings) -> Gateway:
    """Register every page for ``settings``; returns the gateway link the pages share
    (closed when the app shuts down)."""
    gateway = Gateway(settings)
    app.on_shutdown(gateway.aclose)
    # The shared token's role (the pages hide what it may not do): asked at start and,
    # until the gateway has answered, whenever a page connects.
    app.on_startup(gateway.learn_role)
    app.on_connect(gateway.learn_role)
    if settings.login_required:
        install_login(settings, gateway)
    dashboard.register(settings, gateway)
    routes.register(settings, gateway)
    backends.register(settings, gateway)
    config.register(settings, gateway)
    plugins.register(settings, gateway)
    audit.register(settings, gateway)
    metrics.register(settings, gateway)

    @app.on_page_exception
    def _error_page(exc: Exception) -> None:
        # Logged in full on the server; the browser gets one line, never a traceback.
        log.error("page failed: %s", exc, exc_info=exc)
        with ui.column().classes("absolute-center items-center"):
            ui.icon("error_outline", size="3rem", color="negative")
            ui.label("This page could not be shown.").classes("text-lg")
            ui.label(type(exc).__name__).classes("text-sm opacity-70")
            ui.link("Back to the dashboard", "/")

    return gateway


def main() -> None:
    """Serve the admin app (``uv run kairos-ui``); settings come from the environment."""
    try:
        settings = UiSettings.from_env()
    except SettingsError as exc:
        print(f"kairos-ui: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    build(settings)
    if not settings.login_required:
        print(
            f"kairos-ui: no login (KAIROS_UI_PASSWORD or KAIROS_UI_LOGIN=token): open to "
            f"anyone on {settings.host}"
        )
    ui.run(
        host=settings.host,
        port=settings.port,
        title="Kairos",
        reload=False,
        show=False,
        storage_secret=settings.storage_secret,
        favicon="🛰️",
        show_welcome_message=True,
        uvicorn_logging_level="warning",
    )


if __name__ == "__main__":  # pragma: no cover
    main()
