"""NiceGUI fixtures for the UI tests only.

NiceGUI's pytest plugins (``nicegui.testing.user_plugin`` / ``screen_plugin``) are not
loaded for the whole suite: ``pytest_plugins`` is refused in a non-root conftest, and
``-p`` in the root options would import NiceGUI and Selenium for every run. Instead this
conftest imports the fixtures and hooks it needs, so they exist for ``tests/ui`` alone
(pytest registers a conftest's fixtures for its directory, and calls a late conftest's
``pytest_configure`` when it is loaded).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing.general_fixtures import pytest_configure as _nicegui_configure
from nicegui.testing.screen_plugin import (
    nicegui_driver,
    nicegui_remove_all_screenshots,
    nicegui_reset_globals,
    pytest_runtest_makereport,
    screen,
)
from nicegui.testing.screen_plugin import pytest_configure as _screen_configure
from nicegui.testing.user import User
from nicegui.testing.user_simulation import user_simulation
from selenium import webdriver

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, route

__all__ = [
    "nicegui_driver",
    "nicegui_remove_all_screenshots",
    "nicegui_reset_globals",
    "pytest_runtest_makereport",
    "screen",
]

MAIN = Path(__file__).with_name("main.py")
# Selenium Manager would try the internet before the chromedriver on PATH.
os.environ.setdefault("SE_OFFLINE", "true")


def pytest_configure(config: pytest.Config) -> None:
    _nicegui_configure(config)  # storage in a temp dir, the nicegui_main_file marker
    _screen_configure(config)  # a free port and a screenshot dir for the Screen fixture


@pytest.fixture
def ui_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the app's environment (``ui_env(gateway_url=..., token=...)``)."""

    def apply(gateway_url: str, **extra: str) -> None:
        for name in list(os.environ):
            if name.startswith("KAIROS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("KAIROS_GATEWAY_URL", gateway_url)
        monkeypatch.setenv("KAIROS_UI_POLL_INTERVAL", "0.2")
        for name, value in extra.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
async def ui_gateway(file_gateway_factory: GatewayFactory, backend: EchoBackend) -> RunningGateway:
    """A real gateway running from a config file, with one route to a real backend."""
    return await file_gateway_factory(
        {"version": 1, "routers": [route("/echo/{*rest}", "/{*rest}", [backend])]}
    )


@pytest.fixture
async def user(ui_gateway: RunningGateway, ui_env: Any) -> AsyncIterator[User]:
    """NiceGUI's simulated user, on the app configured for ``ui_gateway``."""
    ui_env(ui_gateway.url)
    async with user_simulation(main_file=MAIN) as simulated:
        yield simulated


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="session")
def nicegui_chrome_options() -> webdriver.ChromeOptions:
    """Debian's chromium, headless; without it a local run skips, CI (CI=true) fails."""
    found = _browser()
    if found is None:
        reason = (
            "chromium and chromedriver not installed (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-search-engine-choice-screen",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options
