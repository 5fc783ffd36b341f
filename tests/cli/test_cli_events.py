"""`kairos events`: one readable line (or JSON object) per event, a clean stop on Ctrl-C
and when the gateway ends the stream, one line when the gateway cannot be reached."""

from __future__ import annotations

import asyncio
import signal
import sys

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, api_call, clean_env, eventually, route, unused_port

from .support import Run, kairos, route_data


async def _follow_then_stop(gw: RunningGateway, backend: EchoBackend, *args: str) -> Run:
    """Run ``kairos events ARGS``, add a route while it follows, then stop the gateway
    (which ends the stream, and with it the command)."""
    run = asyncio.ensure_future(kairos("events", *args, url=gw.url))
    events = gw.gateway.events
    await eventually(lambda: events.subscribers == 1)
    created = await api_call(gw.port, "POST", "/api/routes", route_data("/b", "/b", backend.port))
    assert created.status == 201  # published as the change went live
    await gw.gateway.stop(drain_timeout_s=2)  # the stream sends what it holds, then ends
    result = await run
    return result


async def test_one_readable_line_per_event_until_the_gateway_ends_the_stream(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    result = await _follow_then_stop(gw, backend, "--no-metrics")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert "config.applied" in lines[0]
    assert "by loopback (api) from 127.0.0.1: + GET /b" in lines[0]
    assert lines[0][:4].isdigit()  # starts with the time
    assert result.code == 3
    assert result.stderr.startswith("kairos: the gateway ended the event stream (resume with")
    assert len(result.stderr.splitlines()) == 1


async def test_json_prints_one_object_per_line(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    result = await _follow_then_stop(gw, backend, "--json")
    objects = result.json_lines()
    applied = [o for o in objects if o["type"] == "config.applied"]
    assert len(applied) == 1
    assert applied[0]["data"]["changes"] == [{"route": "GET /b", "change": "added"}]
    assert applied[0]["id"].startswith(gw.gateway.events.stream)
    assert {o["type"] for o in objects} <= {"config.applied", "metrics"}


async def test_an_unreachable_gateway_is_one_line_and_exit_status_3() -> None:
    result = await kairos("events", url=f"http://127.0.0.1:{unused_port()}")
    assert result.code == 3
    assert result.stdout == ""
    assert result.stderr.startswith("kairos: gateway unreachable: GET http://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1


async def test_ctrl_c_stops_it_cleanly(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_cli",
        "--url",
        gw.url,
        "events",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert b"metrics" in first  # following: the tick arrives every second
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert err == b""
    await eventually(lambda: gw.gateway.events.subscribers == 0)
