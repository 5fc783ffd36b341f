"""Live updates in real headless Chromium: a change made outside the UI shows without a
reload, well before the next poll, and the header says when the event stream is down.
Locally they skip without chromium; in CI they fail."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import Screen

from .live import START_TIMEOUT_S, LiveStack

pytestmark = pytest.mark.nicegui_main_file("tests/ui/main.py")

#: Far longer than any wait below: what shows in time came through the event stream.
POLL_S = "3600"


@pytest.fixture
def stack(tmp_path: Path, ui_env: Any) -> Iterator[LiveStack]:
    with LiveStack(tmp_path) as running:
        ui_env(running.url, KAIROS_UI_POLL_INTERVAL=POLL_S)
        yield running


def _indicator(screen: Screen) -> str:
    return str(screen.find_by_css('[data-testid="live-indicator"]').text)


def _post(stack: LiveStack, path: str, body: object) -> int:
    request = urllib.request.Request(
        stack.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def test_a_route_added_through_the_api_shows_on_the_routes_page_without_a_reload(
    screen: Screen, stack: LiveStack
) -> None:
    screen.open("/routes")
    screen.should_contain("/echo/{*rest}")
    screen.wait_for(lambda: _indicator(screen) == "● live")
    started = time.monotonic()
    route = {
        "external_path": "/pushed/{id}",
        "internal_path": "/inside/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://127.0.0.1", "port": stack.backend.port}],
    }
    assert _post(stack, "/api/routes", route) == 201
    screen.should_contain("/pushed/{id}")
    assert time.monotonic() - started < 2
    screen.should_contain("2 of 2 routes")


def test_the_header_says_reconnecting_while_the_stream_is_down(
    screen: Screen, stack: LiveStack
) -> None:
    screen.open("/")
    screen.wait_for(lambda: _indicator(screen) == "● live")
    assert stack.gateway is not None
    stopping = asyncio.run_coroutine_threadsafe(stack.gateway.stop(drain_timeout_s=1), stack.loop)
    stopping.result(START_TIMEOUT_S)
    screen.wait_for(lambda: _indicator(screen) == "reconnecting…")
