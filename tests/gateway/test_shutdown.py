"""Graceful shutdown: in-flight requests finish, new connections are refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, route


async def test_stop_lets_in_flight_requests_finish(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/stream", "/stream", [backend])]})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)

    stopping = asyncio.create_task(gw.gateway.stop(drain_timeout_s=10))
    async with asyncio.timeout(5):
        while not gw.gateway.draining:
            await asyncio.sleep(0.01)
    # An idle keep-alive connection is closed at once; new connections are refused.
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", gw.port)
    assert not stopping.done()

    backend.release.set()
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"second-chunk" in rest
    await asyncio.wait_for(stopping, 5)
    writer.close()
    idle_writer.close()


async def test_drain_timeout_bounds_the_wait(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/stream", "/stream", [backend])]})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(gw.gateway.stop(drain_timeout_s=0.2), 5)
    assert loop.time() - started < 2
    # The unfinished response was cut off, not completed.
    assert b"0\r\n\r\n" not in await asyncio.wait_for(reader.read(), 5)
    writer.close()


async def test_keepalive_connection_closes_after_response_while_draining(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/stream", "/stream", [backend])]})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)
    stopping = asyncio.create_task(gw.gateway.stop(drain_timeout_s=10))
    await asyncio.sleep(0)
    backend.release.set()
    await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    # The connection is not kept for another request.
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await asyncio.wait_for(stopping, 5)
    writer.close()
