"""The ``kairos-ui`` command itself: help without starting, a busy port refused in one
line before anything claims to be ready."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.support import LOOPBACK, clean_env

TIMEOUT_S = 60


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kairos_ui", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_help_prints_usage_and_settings_without_serving() -> None:
    done = _run("--help", KAIROS_UI_PORT="1")  # would be refused if it tried to serve
    assert done.returncode == 0
    assert done.stdout.startswith("usage: kairos-ui")
    assert "KAIROS_GATEWAY_URL" in done.stdout
    assert "ready" not in done.stdout
    assert done.stderr == ""


def test_busy_port_is_one_readable_line_and_a_failure() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(KAIROS_UI_PORT=str(port), KAIROS_UI_HOST=LOOPBACK)
    assert done.returncode == 2
    assert done.stderr == (
        f"kairos-ui: cannot listen on {LOOPBACK}:{port}: it is in use "
        "(set KAIROS_UI_PORT to another port)\n"
    )
    assert "ready to go" not in done.stdout
