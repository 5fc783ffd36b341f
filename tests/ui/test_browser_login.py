"""Token login in real headless Chromium: the token never reaches the page, the
browser's storage or a URL, and the role hides what it may not do. Locally it skips
without chromium; in CI it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import Screen
from selenium.webdriver.common.by import By

from .live import LiveStack

pytestmark = pytest.mark.nicegui_main_file("tests/ui/main.py")

VIEWER = "viewer-browser-token-0123456789"


@pytest.fixture
def live(tmp_path: Path, ui_env: Any) -> Iterator[LiveStack]:
    admin = {
        "token": "admin-browser-token-0123456789",
        "tokens": [{"name": "dashboards", "token": VIEWER, "role": "viewer"}],
    }
    with LiveStack(tmp_path, admin=admin) as stack:
        ui_env(stack.url, KAIROS_UI_LOGIN="token")
        yield stack


def test_a_token_login_keeps_the_token_out_of_the_browser(screen: Screen, live: LiveStack) -> None:
    screen.open("/routes")
    screen.should_contain("Admin token")
    screen.find_by_css("input[type=password]").send_keys(VIEWER)
    screen.click("Log in")
    screen.should_contain("/echo/{*rest}")
    screen.should_contain("dashboards · viewer")
    body = screen.selenium.find_element(By.TAG_NAME, "body").text.lower()  # buttons in caps
    assert "refresh" in body
    assert "add route" not in body
    seen = screen.selenium.execute_script(
        "return document.documentElement.outerHTML + JSON.stringify(localStorage)"
        " + JSON.stringify(sessionStorage) + document.cookie + location.href"
    )
    assert "dashboards" in seen
    assert VIEWER not in seen
    assert VIEWER not in screen.selenium.page_source
