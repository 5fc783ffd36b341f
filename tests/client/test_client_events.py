"""`KairosClient.events()`: the live event stream as an async iterator, against a real
gateway; and the SSE parser on its own."""

from __future__ import annotations

import asyncio
import time

import pytest
from kairos_client import (
    GatewayEvent,
    GatewayUnavailable,
    KairosClient,
    MockTransport,
    RawResponse,
    ServerError,
    Unauthorized,
)
from kairos_client.events import SseParser

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, route, unused_port

TOKEN = "client-events-token-0123456789"


async def next_of(stream: object, type_: str, timeout: float = 3.0) -> GatewayEvent:
    async with asyncio.timeout(timeout):
        async for event in stream:  # type: ignore[attr-defined]
            if event.type == type_:
                return event
    raise AssertionError(f"the stream ended before a {type_} event")


async def test_a_change_made_with_the_client_arrives_with_its_id(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    async with KairosClient(gw.url) as client, client.events() as stream:
        started = time.monotonic()
        created = await client.create_route(route("/b", "/b", [backend], methods=["GET"]))
        event = await next_of(stream, "config.applied", timeout=1)
        assert time.monotonic() - started < 1
        assert event.data["changes"] == [{"route": "GET /b", "change": "added"}]
        assert f'"{event.data["version"]}"' == created.etag
        assert event.at is not None
        assert event.id is not None
        assert stream.last_event_id == event.id
        tick = await next_of(stream, "metrics")
        assert tick.data["config_version"] == 2


async def test_the_iteration_ends_cleanly_when_the_gateway_shuts_down(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    seen: list[str] = []
    async with KairosClient(gw.url) as client:
        stream = client.events()

        async def follow() -> None:
            async for event in stream:
                seen.append(event.type)

        task = asyncio.create_task(follow())
        async with asyncio.timeout(3):
            while "metrics" not in seen:
                await asyncio.sleep(0.02)
        await gw.gateway.stop(drain_timeout_s=5)
        await asyncio.wait_for(task, 2)  # ended, no exception
    assert seen[0] == "metrics"


async def test_resuming_after_the_last_event_replays_what_was_missed(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    async with KairosClient(gw.url) as client:
        async with client.events() as stream:
            await client.create_route(route("/b", "/b", [backend], methods=["GET"]))
            await next_of(stream, "config.applied")
            last = stream.last_event_id
        await client.delete_route("/b")
        async with client.events(last_event_id=last) as stream:
            missed = await next_of(stream, "config.applied")
        assert missed.data["changes"] == [{"route": "GET /b", "change": "removed"}]
        async with client.events(last_event_id="elsewhere-1") as stream:
            first = await anext(stream)
        assert first.type == "reset"


async def test_opening_fails_like_any_call(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    async with KairosClient(f"http://127.0.0.1:{unused_port()}") as client:
        with pytest.raises(GatewayUnavailable, match="cannot connect"):
            await anext(client.events())
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/a", "/a", [backend])], "admin": {"token": TOKEN}}
    )
    async with KairosClient(gw.url, token="wrong-token-0123456789") as client:
        with pytest.raises(Unauthorized):
            async with client.events():
                pass
    gw.gateway.events.max_subscribers = 0
    async with KairosClient(gw.url, token=TOKEN) as client:
        with pytest.raises(ServerError) as caught:
            await anext(client.events())
    assert caught.value.problem.type == "too_many_subscribers"


async def test_a_mock_transport_streams_a_written_out_body() -> None:
    body = (
        b"retry: 2000\n: kairos events\n\n"
        b'id: s-1\nevent: config.applied\ndata: {"version": "v2"}\n\n'
        b": keep-alive\n\n"
        b'id: s-2\nevent: metrics\ndata: {"active_requests": 0}\n\n'
    )
    answer = RawResponse(200, {"Content-Type": "text/event-stream"}, body)
    transport = MockTransport(lambda _: answer)
    async with KairosClient(transport=transport) as client:
        stream = client.events()
        events = [event async for event in stream]
    assert [(e.id, e.type, e.data) for e in events] == [
        ("s-1", "config.applied", {"version": "v2"}),
        ("s-2", "metrics", {"active_requests": 0}),
    ]
    assert stream.last_event_id == "s-2"
    assert transport.requests[0].url.endswith("/api/events")


def test_the_parser_follows_the_event_stream_rules() -> None:
    parser = SseParser()
    lines = [
        "retry: 1500",
        ": a comment",
        "id: x-7",
        "event: backend.health",
        'data: {"backend":',
        'data: "http://a:1"}',
        "",
        "",  # a blank line with nothing pending is no event
        "data:{}",
        "",
    ]
    out = [event for line in lines if (event := parser.feed(line + "\n")) is not None]
    assert out == [
        GatewayEvent("backend.health", {"backend": "http://a:1"}, "x-7"),
        GatewayEvent("message", {}, "x-7"),
    ]
    assert parser.retry_ms == 1500
