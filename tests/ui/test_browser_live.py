"""Live updates in real headless Chromium: a change made outside the UI shows without a
reload, well before the next poll, and the header says when the event stream is down.
Locally they skip without chromium; in CI they fail."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
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


def test_a_route_added_by_the_cli_shows_on_the_routes_page_without_a_reload(
    screen: Screen, stack: LiveStack
) -> None:
    screen.open("/routes")
    screen.should_contain("/echo/{*rest}")
    screen.wait_for(lambda: _indicator(screen) == "● live")
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "kairos_cli",
            "--url",
            stack.url,
            "routes",
            "add",
            "-e",
            "/pushed/{id}",
            "-i",
            "/inside/{id}",
            "-m",
            "GET",
            "-b",
            f"127.0.0.1:{stack.backend.port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    started = time.monotonic()  # from the moment the gateway has the route
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
