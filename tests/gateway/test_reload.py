"""Hot reload: the API, the file watcher and SIGHUP; zero dropped requests; restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, eventually, raw_request, route

DEBOUNCE = {"watch_debounce_ms": 50, "metrics_interval_s": 0.02}


def config(generation: int, backend: EchoBackend, **extra: Any) -> dict[str, Any]:
    """Config number ``generation``: /svc goes to /gen<N>/..., plus one route per version
    so a half-applied config would show up as a mismatch."""
    return {
        "version": 1,
        "routers": [
            route("/svc/{*rest}", f"/gen{generation}/{{*rest}}", [backend]),
            route(f"/only{generation}", f"/gen{generation}/only", [backend], methods=["GET"]),
        ],
        **extra,
    }


async def wait_for_version(gw: RunningGateway, version: int) -> None:
    """Wait (bounded) until the gateway's config version reaches ``version``."""
    async with asyncio.timeout(10):
        while gw.gateway.runtime.snapshot.generation < version:
            await gw.gateway.management.sampler.wait_for(
                gw.gateway.management.sampler.samples_taken + 1
            )


async def test_zero_dropped_requests_across_20_changes(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(0, backend, hot_reload=False))
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    failures: list[str] = []
    seen: list[int] = []
    done = asyncio.Event()
    per_client = 150

    async def client() -> None:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), connector=aiohttp.TCPConnector(limit=1)
        ) as session:
            last = -1
            for i in range(per_client):
                try:
                    async with session.get(f"{gw.url}/svc/item/{i}") as resp:
                        body = await resp.json()
                        if resp.status != 200:
                            failures.append(f"status {resp.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(repr(exc))
                    continue
                generation = int(body["uri"].split("/")[1].removeprefix("gen"))
                if generation < last:
                    failures.append(f"went back from gen{last} to gen{generation}")
                last = generation
                seen.append(generation)

    async def changer() -> None:
        for n in range(1, 21):
            if n % 2:  # a reload from a file edited by hand
                source.write_text(json.dumps(config(n, backend, hot_reload=False)))
                resp = await raw_request(gw.port, "/api/config/reload", method="POST")
            else:  # a route change through the API
                body = json.dumps(route("/svc/{*rest}", f"/gen{n}/{{*rest}}", [backend]))
                resp = await raw_request(
                    gw.port,
                    "/api/routes/%2Fsvc%2F%7B%2Arest%7D",
                    method="PUT",
                    body=body.encode(),
                    headers=[("Content-Type", "application/json")],
                )
            assert resp.status == 200, resp.body
            # Every answer from here on must come from config n or later.
            check = await raw_request(gw.port, "/svc/check")
            assert check.json()["uri"].startswith(f"/gen{n}/")
            await asyncio.sleep(0)  # let the clients in between changes
        done.set()

    async with asyncio.timeout(60):
        await asyncio.gather(changer(), *(client() for _ in range(4)))
    assert failures == []
    assert len(seen) == 4 * per_client
    assert gw.gateway.runtime.snapshot.generation == 21
    assert len(set(seen)) > 1  # the clients did see the configs change


async def test_watcher_applies_edits_and_skips_own_writes(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(0, backend), **DEBOUNCE)
    watcher = gw.gateway.management.watcher
    assert watcher is not None
    async with asyncio.timeout(10):
        await watcher.watching.wait()
    source = gw.gateway.runtime.snapshot.source
    assert source is not None

    source.write_text(json.dumps(config(1, backend)))
    await wait_for_version(gw, 2)
    assert (await raw_request(gw.port, "/only1")).status == 200
    status = (await raw_request(gw.port, "/api/config/status")).json()
    assert status["last_reload"]["trigger"] == "watcher"
    assert status["last_reload"]["ok"] is True

    # The gateway's own write is not applied a second time.
    body = json.dumps(route("/api-made", "/x", [backend])).encode()
    made = await raw_request(
        gw.port,
        "/api/routes",
        method="POST",
        body=body,
        headers=[("Content-Type", "application/json")],
    )
    assert made.status == 201
    assert gw.gateway.runtime.snapshot.generation == 3
    # A later hand edit is picked up, which proves the watcher saw (and skipped) ours.
    edited = json.loads(source.read_text())
    edited["routers"].append(route("/hand", "/hand", [backend]))
    source.write_text(json.dumps(edited))
    await wait_for_version(gw, 4)
    assert gw.gateway.runtime.snapshot.generation == 4
    assert (await raw_request(gw.port, "/hand")).status == 200
    assert (await raw_request(gw.port, "/api-made")).status == 200


async def test_watcher_keeps_serving_on_an_invalid_file(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(0, backend), **DEBOUNCE)
    watcher = gw.gateway.management.watcher
    assert watcher is not None
    async with asyncio.timeout(10):
        await watcher.watching.wait()
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    source.write_text('{"version": 1, "routers": [')
    async with asyncio.timeout(10):
        while gw.gateway.management.live.last_reload is None:
            await gw.gateway.management.sampler.wait_for(
                gw.gateway.management.sampler.samples_taken + 1
            )
    status = (await raw_request(gw.port, "/api/config/status")).json()
    assert status["last_reload"]["ok"] is False
    assert "invalid JSON" in status["last_reload"]["error"]
    assert status["config_version"] == 1
    assert (await raw_request(gw.port, "/only0")).status == 200

    # The file put back as it was: nothing to apply, and the failure no longer holds.
    source.write_text(json.dumps(config(0, backend), indent=2))
    live = gw.gateway.management.live
    await eventually(lambda: live.last_reload is not None and live.last_reload.ok, timeout=10)
    status = (await raw_request(gw.port, "/api/config/status")).json()
    assert status["last_reload"]["ok"] is True
    assert status["config_version"] == 1


async def test_hot_reload_false_turns_the_watcher_off(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(config(0, backend, hot_reload=False), **DEBOUNCE)
    status = (await raw_request(gw.port, "/api/config/status")).json()
    assert status["hot_reload"] is False
    assert status["watcher_running"] is False
    # Switching it on through the API starts the watcher at once.
    current = (await raw_request(gw.port, "/api/config")).json()
    current["hot_reload"] = True
    resp = await raw_request(
        gw.port,
        "/api/config",
        method="PUT",
        body=json.dumps(current).encode(),
        headers=[("Content-Type", "application/json")],
    )
    assert resp.status == 200
    assert (await raw_request(gw.port, "/api/config/status")).json()["watcher_running"] is True


# -- a real process: SIGHUP and restarts ----------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIROS_", "RUST_LOG"))}
    env.update(KAIROS_LOG_FORMAT="json", KAIROS_ACCESS_LOG="off")
    return env


@asynccontextmanager
async def process(
    config_path: Path, *, explicit: bool = True
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The gateway as a process on port 0; ``explicit=False`` runs it in the config's
    directory with the default path (where a missing file is not an error)."""
    flags = ["--config", str(config_path)] if explicit else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *flags,
        cwd=config_path.parent,
        env=_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "the gateway exited early"
                record = json.loads(line)
                if record["message"].startswith("listening on"):
                    break
        yield proc, int(record["port"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.communicate()


async def _log_line(proc: asyncio.subprocess.Process, text: str) -> dict[str, Any]:
    assert proc.stderr is not None
    async with asyncio.timeout(15):
        while True:
            line = await proc.stderr.readline()
            assert line, "the gateway exited"
            record: dict[str, Any] = json.loads(line)
            if text in record["message"]:
                return record


async def test_sighup_reloads_and_changes_survive_a_restart(
    backend: EchoBackend, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(0, backend, hot_reload=False)))
    async with process(path) as (proc, port):
        path.write_text(json.dumps(config(1, backend, hot_reload=False)))
        proc.send_signal(signal.SIGHUP)
        await _log_line(proc, "configuration applied")
        assert (await raw_request(port, "/only1")).status == 200
        status = (await raw_request(port, "/api/config/status")).json()
        assert status["last_reload"]["trigger"] == "sighup"

        body = json.dumps(route("/kept", "/kept", [backend])).encode()
        created = await raw_request(
            port,
            "/api/routes",
            method="POST",
            body=body,
            headers=[("Content-Type", "application/json")],
        )
        assert created.status == 201
    async with process(path) as (_, port):
        assert (await raw_request(port, "/kept")).status == 200
        assert (await raw_request(port, "/only1")).status == 200


async def test_routes_added_without_a_config_file_are_saved_to_its_path(
    backend: EchoBackend, tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    async with process(path, explicit=False) as (_, port):
        body = json.dumps(route("/new", "/new", [backend])).encode()
        created = await raw_request(
            port,
            "/api/routes",
            method="POST",
            body=body,
            headers=[("Content-Type", "application/json")],
        )
        assert created.status == 201
    assert [r["external_path"] for r in json.loads(path.read_text())["routers"]] == ["/new"]
    assert path.stat().st_mode & 0o077 == 0  # a new file may hold secrets: owner only
