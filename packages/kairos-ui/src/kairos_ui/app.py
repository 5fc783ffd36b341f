"""Wiring: settings -> pages -> server. `main()` is the ``kairos-ui`` command."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Sequence

from nicegui import app, ui

from . import __version__
from .auth import install_login
from .gateway import Gateway
from .pages import audit, backends, config, dashboard, metrics, plugins, routes
from .settings import SettingsError, UiSettings

__all__ = ["build", "check_port_free", "main", "parse_args", "serve"]

log = logging.getLogger("kairos_ui")

ENVIRONMENT_HELP = """\
settings (environment variables):
  KAIROS_GATEWAY_URL         the gateway to manage (default http://localhost:5900)
  KAIROS_ADMIN_TOKEN         the gateway's admin token, if it has one
  KAIROS_UI_HOST             address to listen on (default 127.0.0.1; any other
                             address needs KAIROS_UI_PASSWORD)
  KAIROS_UI_PORT             port to listen on (default 3000)
  KAIROS_UI_PASSWORD         require this password on every page
  KAIROS_UI_STORAGE_SECRET   signs the login cookie (default: random per start)
  KAIROS_UI_POLL_INTERVAL    seconds between refreshes of live pages (default 2)
  KAIROS_UI_GATEWAY_TIMEOUT  seconds one call to the gateway may take (default 5)

docs: docs/ui.md"""


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--help`` and ``--version``; everything else is set in the environment."""
    parser = argparse.ArgumentParser(
        prog="kairos-ui",
        description="Serve the Kairos admin UI, which manages a gateway through its "
        "management API.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def check_port_free(host: str, port: int) -> None:
    """Raise `SettingsError` when ``host:port`` cannot be listened on (another process
    has it, or the address is not this machine's), before anything says "ready"."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SettingsError(f"KAIROS_UI_HOST {host!r} cannot be resolved: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = "it is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise SettingsError(
                f"cannot listen on {host}:{port}: {reason} (set KAIROS_UI_PORT to another port)"
            ) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the admin app (``uv run kairos-ui``); settings come from the environment."""
    parse_args(argv)
    try:
        settings = UiSettings.from_env()
        check_port_free(settings.host, settings.port)
    except SettingsError as exc:
        print(f"kairos-ui: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(settings)


def serve(settings: UiSettings) -> None:
    """Register the pages for ``settings`` and run the server until it is stopped."""
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
