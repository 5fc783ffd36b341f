"""Stopping the gateway process by signal: the ways service managers and shells send
them (a whole process group under `uv run`, a repeated SIGTERM) still drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import LOOPBACK, EchoBackend, clean_env, eventually, route

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, backend: EchoBackend) -> Path:
    path = tmp_path / "config.json"
    config = {"version": 1, "routers": [route("/stream", "/stream", [backend])]}
    path.write_text(json.dumps(config))
    return path


async def _start(argv: list[str], config: Path, cwd: Path) -> tuple[Any, int, list[dict[str, Any]]]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--config",
        str(config),
        "--host",
        LOOPBACK,
        "--port",
        "0",
        cwd=cwd,
        env=clean_env(KAIROS_LOG_FORMAT="json", KAIROS_ACCESS_LOG="off"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, as a service manager gives it
    )
    assert proc.stderr is not None
    records: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while True:
            line = await proc.stderr.readline()
            assert line, f"gateway exited early: {records}"
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
            if records and records[-1].get("message", "").startswith("listening on"):
                break

    async def drain() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))

    proc.drainer = asyncio.create_task(drain())
    return proc, int(records[-1]["port"]), records


async def _stop_group_during_a_request(
    argv: list[str], backend: EchoBackend, tmp_path: Path, then: Any = None
) -> list[dict[str, Any]]:
    """Start the gateway, hold a request in flight, send SIGTERM to its process group
    and, once it is shutting down, ``then(proc)``; the request must still complete.
    Returns the gateway's log records."""
    proc, port, records = await _start(argv, _config(tmp_path, backend), tmp_path)
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (LOOPBACK.encode(), port))
        await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 10)
        os.killpg(proc.pid, signal.SIGTERM)
        await eventually(lambda: any(r.get("message") == "shutting down" for r in records))
        if then is not None:
            then(proc)
        backend.release.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
        assert b"second-chunk" in rest
        writer.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await asyncio.wait_for(proc.drainer, 10)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return records


async def test_sigterm_to_the_process_group_under_uv_run_drains(
    backend: EchoBackend, tmp_path: Path
) -> None:
    # uv run forwards the SIGTERM it gets to the gateway, which got its own already.
    uv = os.environ.get("UV")
    if uv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the UV variable (set by `uv run`) is missing: run the tests with uv")
        pytest.skip("not run under `uv run` (no UV variable): the uv binary is unknown")
    argv = [uv, "run", "--project", str(ROOT), "--frozen", "kairos-gateway"]
    records = await _stop_group_during_a_request(argv, backend, tmp_path)
    assert not any("second signal" in r.get("message", "") for r in records)


async def test_a_repeated_sigterm_counts_once(backend: EchoBackend, tmp_path: Path) -> None:
    # The second one once the first is being handled (two signals sent at once are
    # merged by the kernel into one), as a forwarding wrapper's copy arrives.
    argv = [sys.executable, "-m", "kairos_gateway"]
    records = await _stop_group_during_a_request(
        argv, backend, tmp_path, lambda proc: os.kill(proc.pid, signal.SIGTERM)
    )
    assert not any("second signal" in r.get("message", "") for r in records)
    assert any("repeated" in r.get("message", "") for r in records)


async def test_a_second_sigint_cuts_the_drain_short(backend: EchoBackend, tmp_path: Path) -> None:
    proc, port, records = await _start(
        [sys.executable, "-m", "kairos_gateway"], _config(tmp_path, backend), tmp_path
    )
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (LOOPBACK.encode(), port))
        await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 10)
        os.kill(proc.pid, signal.SIGINT)
        await eventually(lambda: any(r.get("message") == "shutting down" for r in records))
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C again: stop now
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        # The response never completed: the drain was cut short.
        assert b"0\r\n\r\n" not in await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await asyncio.wait_for(proc.drainer, 10)
        assert any("second signal" in r.get("message", "") for r in records)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
