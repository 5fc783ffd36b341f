"""Several worker processes on one port (`--workers 2`), as a real process tree."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.gateway.test_ops import sample
from tests.support import EchoBackend, gateway_process, raw_request, route


async def _pids(port: int, attempts: int = 200) -> set[int]:
    """Worker pids seen on fresh connections (the kernel spreads them over workers).

    A connection the kernel had queued for a worker that just died is reset: that
    attempt is skipped."""
    seen: set[int] = set()
    for _ in range(attempts):
        try:
            seen.add((await raw_request(port, "/health")).json()["pid"])
        except ConnectionResetError:
            continue
        if len(seen) >= 2:
            break
    return seen


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


async def test_both_workers_serve_and_an_api_change_reaches_both(
    tmp_path: Path, backend: EchoBackend
) -> None:
    path = _write(tmp_path, {"version": 1, "hot_reload": False, "routers": []})
    async with gateway_process("--config", str(path), "--workers", "2", cwd=tmp_path) as (
        proc,
        port,
        _,
    ):
        assert len(await _pids(port)) == 2

        created = await raw_request(
            port,
            "/api/routes",
            method="POST",
            headers=[("Content-Type", "application/json")],
            body=json.dumps(route("/new", "/new", [backend])).encode(),
        )
        assert created.status == 201

        async def everywhere() -> bool:
            # Fresh connections land on either worker; 40 in a row all served means
            # both have the route (each is missed with probability 2^-40).
            statuses = [(await raw_request(port, "/new")).status for _ in range(40)]
            return all(status == 200 for status in statuses)

        async with asyncio.timeout(10):
            while not await everywhere():
                await asyncio.sleep(0.05)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_metrics_report_the_whole_gateway(tmp_path: Path, backend: EchoBackend) -> None:
    path = _write(tmp_path, {"version": 1, "routers": [route("/x", "/x", [backend])]})
    async with gateway_process("--config", str(path), "--workers", "2", cwd=tmp_path) as (
        proc,
        port,
        _,
    ):
        assert len(await _pids(port)) == 2
        for _ in range(30):
            assert (await raw_request(port, "/x")).status == 200

        async def every_scrape_counts_all() -> bool:
            counts = []
            for _ in range(8):  # fresh connections: both workers answer some scrapes
                text = (await raw_request(port, "/metrics")).body.decode()
                counts.append(sample(text, "kairos_requests_total", route="/x", status="200"))
            return all(count == 30 for count in counts)

        async with asyncio.timeout(10):  # workers publish their figures once a second
            while not await every_scrape_counts_all():
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_a_dead_worker_is_replaced(tmp_path: Path, backend: EchoBackend) -> None:
    path = _write(tmp_path, {"version": 1, "routers": [route("/x", "/x", [backend])]})
    async with gateway_process("--config", str(path), "--workers", "2", cwd=tmp_path) as (
        proc,
        port,
        _,
    ):
        before = await _pids(port)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            pids = await _pids(port, attempts=50)
            return len(pids) == 2 and victim not in pids

        async with asyncio.timeout(15):
            while not await replaced():
                await asyncio.sleep(0.05)
        for _ in range(20):
            assert (await raw_request(port, "/x")).status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
