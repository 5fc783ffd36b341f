"""The example configuration and its demo backend agree: every method a route of
``examples/config.json`` allows is one the demo backend answers (not with 405)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import LOOPBACK, unused_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "config.json"
READY_TIMEOUT_S = 20


@pytest.fixture
def demo_backend() -> Iterator[str]:
    port = unused_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo_backend.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        assert "demo backend on" in process.stdout.readline()  # printed once listening
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.terminate()
        process.wait(READY_TIMEOUT_S)
        process.stdout.close()


def _status(url: str, method: str) -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method != "HEAD" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_method_the_example_allows_is_answered(demo_backend: str) -> None:
    config = json.loads(EXAMPLE.read_text())
    checked = 0
    for route in config["routers"]:
        path = re.sub(r"\{\*?\w+\}", "x", route["internal_path"])
        for method in route["methods"]:
            assert _status(demo_backend + path, method) == 200, (method, route["external_path"])
            checked += 1
    assert checked >= 3
