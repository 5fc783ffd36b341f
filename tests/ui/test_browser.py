"""End-to-end flows in real headless Chromium (NiceGUI's `Screen` + Selenium) against
a real gateway and a real backend. Locally they skip without chromium; in CI they fail."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kairos_ui.route_table import PAGE_SIZES
from nicegui.testing import Screen
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.support import route

from .live import LiveStack

PAGE = PAGE_SIZES[0]

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


def _field_message(screen: Screen, field: str) -> Any:
    return screen.selenium.find_element(
        By.XPATH,
        f"//input[@data-testid='field:{field}']"
        "/ancestor::label[contains(@class, 'q-field')]//div[contains(@class, 'q-field__bottom')]",
    )


def test_invalid_route_shows_the_field_error_and_saves_nothing(
    screen: Screen, live: LiveStack
) -> None:
    screen.open("/routes")
    screen.should_contain("/echo/{*rest}")
    screen.click("Add route")
    _type(screen, "external_path", "/health")
    _type(screen, "internal_path", "/h")
    _type(screen, "backends[0].port", "70000")
    _type(screen, "backends[0].weight", "2")  # the port input loses focus: no clamping
    screen.click("Save")
    message = _field_message(screen, "external_path")
    screen.wait_for(lambda: "reserved path" in message.text)
    port = _field_message(screen, "backends[0].port")
    screen.wait_for(lambda: "65535" in port.text)
    box = screen.find_by_css('input[data-testid="field:backends[0].port"]')
    assert box.get_attribute("value") == "70000"  # as typed, not clamped to 65535
    assert "Add route" in screen.selenium.find_element(By.TAG_NAME, "body").text  # still open
    status, routes = live.get("/api/routes")
    assert status == 200
    assert [r["external_path"] for r in routes["routes"]] == ["/echo/{*rest}"]


#: Routes in the big-table flow: what "the UI at 500 routes" asks for.
MANY = 500
#: The first page must show well within this (the goal is 2 s; CI machines are shared).
FIRST_PAGE_BOUND_S = 6.0


def _many_routes(backend: Any) -> list[dict[str, Any]]:
    """``/svc000/items/{id}`` .. ``/svc499/items/{id}``: every fifth one also takes POST."""
    return [
        route(
            f"/svc{i:03d}/items/{{id}}",
            f"/items/{{id}}/{i}",
            [backend],
            methods=["GET", "POST"] if i % 5 == 0 else ["GET"],
        )
        for i in range(MANY - 1)  # plus /echo/{*rest}: MANY in all
    ]


@pytest.fixture
def crowded(tmp_path: Path, ui_env: Any) -> Iterator[LiveStack]:
    with LiveStack(tmp_path, _many_routes) as stack:
        ui_env(stack.url)
        yield stack


def _click(screen: Screen, css: str) -> None:
    """Click ``css`` once it takes the click: a dialog's buttons are covered while it
    fades in (300 ms), and a click then lands on what is in front of them."""

    def clicked() -> bool:
        try:
            screen.find_by_css(css).click()
        except ElementClickInterceptedException:
            return False
        return True

    screen.wait_for(clicked)


def _wait_for_cell(screen: Screen, marker: str, expected: str, within_s: float) -> None:
    """Wait (at most ``within_s``) until the ``marker`` cell reads ``expected``; the
    failure names what it read last."""
    seen = None
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(StaleElementReferenceException):
            seen = _cell(screen, marker)
            if seen == expected:
                return
        screen.wait(0.1)
    raise AssertionError(f"{marker} reads {seen!r} after {within_s} s, not {expected!r}")


def _paths(screen: Screen) -> list[str]:
    found = screen.selenium.find_elements(By.CSS_SELECTOR, '[data-testid="route-path"]')
    return [e.text for e in found]


def _search(screen: Screen, text: str) -> None:
    box = screen.find_by_css('input[data-testid="search"]')
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)


def test_routes_page_at_500_routes(
    screen: Screen, crowded: LiveStack, record_property: Any
) -> None:
    screen.open("/")  # the UI server runs and the browser has loaded the app once
    started = time.perf_counter()
    screen.selenium.get(screen.url + "/routes")
    screen.wait_for(lambda: _cell(screen, "route-count") == f"{MANY} of {MANY} routes")
    screen.wait_for(lambda: len(_paths(screen)) == PAGE)
    elapsed = time.perf_counter() - started
    record_property("routes_first_page_s", round(elapsed, 3))
    print(f"\nfirst page of {MANY} routes shown in {elapsed:.2f} s")
    assert elapsed < FIRST_PAGE_BOUND_S
    assert _paths(screen)[:2] == ["/echo/{*rest}", "/svc000/items/{id}"]

    # Sorting: the path header again puts the last route first.
    screen.find_by_css('[data-testid="sort:path"]').click()
    screen.wait_for(lambda: _paths(screen)[0] == "/svc498/items/{id}")
    screen.find_by_css('[data-testid="sort:path"]').click()
    screen.wait_for(lambda: _paths(screen)[0] == "/echo/{*rest}")

    # Paging: page 2 holds routes 26-50.
    screen.find_by_css('[data-testid="pager"] button[aria-label="2"]').click()
    screen.wait_for(lambda: _cell(screen, "page-info") == f"showing 26-50 of {MANY}")
    assert _paths(screen)[0] == f"/svc{PAGE - 1:03d}/items/{{id}}"

    # Filtering by a column: POST routes under /svc1..
    _search(screen, "method:post path:/svc1")
    screen.wait_for(lambda: _cell(screen, "route-count") == f"20 of {MANY} routes")
    assert all(p.startswith("/svc1") for p in _paths(screen))
    assert _cell(screen, "page-info") == "showing 1-20 of 20"  # back on the first page

    # Bulk delete asks first; cancelling deletes nothing.
    screen.find_by_css('[data-testid="select-all"]').click()
    screen.wait_for(lambda: "(20)" in screen.find_by_css('[data-testid="bulk-delete"]').text)
    screen.find_by_css('[data-testid="bulk-delete"]').click()
    screen.should_contain("Delete 20 routes?")
    _click(screen, '[data-testid="cancel-bulk-delete"]')
    # The dialog fades out (300 ms); its backdrop takes clicks until it is gone.
    screen.wait_for(
        lambda: not screen.selenium.find_elements(By.CSS_SELECTOR, ".q-dialog__backdrop")
    )
    assert len(crowded.get("/api/routes")[1]["routes"]) == MANY
    screen.find_by_css('[data-testid="bulk-delete"]').click()
    screen.should_contain("Delete 20 routes?")
    _click(screen, '[data-testid="confirm-bulk-delete"]')
    # One configuration change of 480 routes, then the page reloads them: about 1 s
    # on a quiet machine, longer beside a browser on two busy cores.
    _wait_for_cell(screen, "route-count", f"0 of {MANY - 20} routes", within_s=15)
    left = {r["external_path"] for r in crowded.get("/api/routes")[1]["routes"]}
    assert len(left) == MANY - 20
    assert "/svc100/items/{id}" not in left
    assert "/svc101/items/{id}" in left  # GET only: not matched, not deleted
    assert crowded.get("/svc100/items/7")[0] == 404
    assert crowded.get("/svc101/items/7")[0] == 200
