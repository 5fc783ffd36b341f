"""`GET /api/events`: the live event feed as Server-Sent Events.

Each event is one SSE message::

    id: 3f9a1c22-17
    event: config.applied
    data: {"at":"2026-12-07T20:31:02.120Z","version":"9a02...","actor":"deployer",...}

The stream opens with ``retry: 2000`` (EventSource clients wait 2 s before
reconnecting) and a comment; a comment line (``: keep-alive``) follows every
``heartbeat_s`` (15 s) without an event, so proxies and load balancers keep an idle
stream open and a client notices a dead one. ``Last-Event-ID`` resumes after that
event (`EventBus.subscribe`). The stream ends when the gateway shuts down, or after a
``lagged`` event for a client too slow to keep up. ``HEAD`` answers the headers alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from ..events import Event, EventBus, Subscription
from ..messages import ApiRequest, ApiResponse, StreamedResponse

__all__ = ["CONTENT_TYPE", "HEARTBEAT_S", "event_frame", "open_stream"]

CONTENT_TYPE = "text/event-stream"
#: Seconds without an event after which a comment line is sent.
HEARTBEAT_S = 15.0
#: What EventSource clients wait before reconnecting, in milliseconds.
RETRY_MS = 2000

_HEADERS = [
    ("Content-Type", f"{CONTENT_TYPE}; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    # nginx buffers responses unless told not to; a buffered stream is not live.
    ("X-Accel-Buffering", "no"),
]


def _iso_ms(epoch: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{whole}.{int(epoch % 1 * 1000):03d}Z"


def event_frame(event: Event) -> bytes:
    """One SSE message; ``data`` is one line of JSON (JSON escapes every newline)."""
    data = json.dumps({"at": _iso_ms(event.at), **event.data}, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def _frames(subscription: Subscription, heartbeat_s: float) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n: kairos events\n\n".encode()
    while True:
        try:
            event = await subscription.next(heartbeat_s)
        except EOFError:
            return
        yield b": keep-alive\n\n" if event is None else event_frame(event)


def open_stream(
    bus: EventBus, request: ApiRequest, heartbeat_s: float = HEARTBEAT_S
) -> ApiResponse | StreamedResponse:
    """The answer to ``GET``/``HEAD /api/events`` (the caller has authorized it).
    Raises `TooManySubscribers` (503) when the bus has all the streams it allows."""
    if request.method == "HEAD":
        return ApiResponse(200, b"", list(_HEADERS))
    subscription = bus.subscribe(request.headers.get("Last-Event-ID"))
    return StreamedResponse(
        200,
        list(_HEADERS),
        _frames(subscription, heartbeat_s),
        close=subscription.close,
        held=True,
    )
