"""Server-Sent Events and other long streamed responses are relayed as they arrive,
never buffered: each event reaches the client while the backend still holds the
stream open (real aiohttp backend and client; no sleeps, each step waits on an event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory
from tests.support import LOOPBACK, route


@dataclass
class EventSource:
    """``/events`` sends one event per `step` set by the test, ``/ticker`` one event,
    then waits for `release` before the last one and the end of the stream."""

    port: int = 0
    step: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _open(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = await self._open(request)
        while (data := await self.step.get()) != "end":
            await response.write(f"data: {data}\n\n".encode())
        await response.write_eof()
        self.ended.set()
        return response

    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        response = await self._open(request)
        await response.write(b"event: tick\ndata: first\n\n")
        await self.release.wait()
        await response.write(b"event: tick\ndata: last\n\n")
        await response.write_eof()
        self.ended.set()
        return response

    async def start(self) -> EventSource:
        app = web.Application()
        app.router.add_get("/events", self._events)
        app.router.add_get("/ticker", self._ticker)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock, self.port = bind_unused_port()
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        self.release.set()
        self.step.put_nowait("end")
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def source() -> AsyncIterator[EventSource]:
    backend = await EventSource().start()
    yield backend
    await backend.stop()


async def next_event(content: aiohttp.StreamReader) -> list[str]:
    """The lines of the next event (up to its blank line)."""
    lines: list[str] = []
    async with asyncio.timeout(5):
        while (line := (await content.readline()).decode().rstrip("\n")) or not lines:
            if line:
                lines.append(line)
    return lines


async def test_first_event_arrives_before_the_stream_ends(
    source: EventSource, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/sse", "/ticker", [source], methods=["GET"])]}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.url}/sse", headers={"Accept": "text/event-stream"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert await next_event(resp.content) == ["event: tick", "data: first"]
        assert not source.ended.is_set()  # the backend still holds the stream open
        source.release.set()
        assert await next_event(resp.content) == ["event: tick", "data: last"]
        assert await resp.content.read() == b""
    assert source.ended.is_set()


async def test_each_event_is_relayed_as_it_is_sent(
    source: EventSource, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/events", "/events", [source], methods=["GET"])]}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.url}/events") as resp,
    ):
        for i in range(20):  # lockstep: the next event is sent only once this one arrived
            source.step.put_nowait(f"event {i}")
            assert await next_event(resp.content) == [f"data: event {i}"]
        source.step.put_nowait("end")
        assert await resp.content.read() == b""
