"""End-to-end flows in real headless Chromium (NiceGUI's `Screen` + Selenium) against
a real gateway and a real backend. Locally they skip without chromium; in CI they fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import Screen
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .live import LiveStack

pytestmark = pytest.mark.nicegui_main_file("tests/ui/main.py")


@pytest.fixture
def live(tmp_path: Path, ui_env: Any) -> Iterator[LiveStack]:
    with LiveStack(tmp_path) as stack:
        ui_env(stack.url, KAIROS_UI_POLL_INTERVAL="0.5")
        yield stack


def _stat(screen: Screen, name: str) -> str:
    return str(screen.find_by_css(f'[data-testid="stat-{name}"]').text)


def _cell(screen: Screen, marker: str) -> str:
    return str(screen.find_by_css(f'[data-testid="{marker}"]').text)


def _type(screen: Screen, field: str, text: str) -> None:
    # Quasar passes the extra attribute on to the native <input>.
    box = screen.find_by_css(f'input[data-testid="field:{field}"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)


def test_dashboard_numbers_follow_traffic(screen: Screen, live: LiveStack) -> None:
    screen.open("/")
    screen.wait_for(lambda: _stat(screen, "config_version") == "1")
    before = _stat(screen, "total_requests")
    for _ in range(5):
        assert live.get("/echo/hello")[0] == 200
    assert live.get("/missing")[0] == 404
    screen.wait_for(lambda: _stat(screen, "total_requests") != before)
    # The 404 matched no route: it shows in the panel beside the cards, not as a 4xx.
    screen.wait_for(lambda: _cell(screen, "unmatched-requests") == "1")
    assert _stat(screen, "client_errors") == "0"
    assert _stat(screen, "success_rate") == "100 %"
    assert _cell(screen, "admin-requests") not in ("", "0")  # this page polling


def test_route_created_in_the_ui_serves_traffic_at_once(screen: Screen, live: LiveStack) -> None:
    assert live.get("/fresh/1")[0] == 404
    screen.open("/routes")
    screen.should_contain("/echo/{*rest}")
    screen.click("Add route")
    screen.should_contain("Add route")
    _type(screen, "external_path", "/fresh/{id}")
    _type(screen, "internal_path", "/inside/{id}")
    _type(screen, "backends[0].host", "http://127.0.0.1")
    _type(screen, "backends[0].port", str(live.backend.port))
    screen.click("Save")
    screen.should_contain("Saved /fresh/{id}")
    status, body = live.get("/fresh/1")
    assert status == 200
    assert body["uri"] == "/inside/1"
    screen.should_contain("2 of 2 routes")


def test_invalid_route_shows_the_field_error_and_saves_nothing(
    screen: Screen, live: LiveStack
) -> None:
    screen.open("/routes")
    screen.should_contain("/echo/{*rest}")
    screen.click("Add route")
    _type(screen, "external_path", "/health")
    _type(screen, "internal_path", "/h")
    _type(screen, "backends[0].port", str(live.backend.port))
    screen.click("Save")
    message = screen.selenium.find_element(
        By.XPATH,
        "//input[@data-testid='field:external_path']"
        "/ancestor::label[contains(@class, 'q-field')]//div[contains(@class, 'q-field__bottom')]",
    )
    screen.wait_for(lambda: "reserved path" in message.text)
    assert "Add route" in screen.selenium.find_element(By.TAG_NAME, "body").text  # still open
    status, routes = live.get("/api/routes")
    assert status == 200
    assert [r["external_path"] for r in routes["routes"]] == ["/echo/{*rest}"]
