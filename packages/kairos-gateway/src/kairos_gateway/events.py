"""The gateway's live events: one in-process bus, many bounded subscribers.

Publishers (a configuration that went live, a reload that failed or recovered, a
backend's health, breaker or ejection changing, the metrics tick) call
`EventBus.publish`; each `GET /api/events` stream holds a `Subscription`. Publishing
never waits and never grows memory without bound:

- every subscriber has a queue of at most ``queue_size`` events; one that falls that
  far behind is dropped: it gets a ``lagged`` event and its stream ends (the client
  reconnects with ``Last-Event-ID`` and is replayed what it missed, when still kept);
- the last ``replay_size`` events (metrics ticks excepted: a stale tick is worthless)
  are kept in a ring for those reconnections;
- at most ``max_subscribers`` streams are open at once (`TooManySubscribers`, 503).

Event ids are ``<stream>-<n>``: ``stream`` is random per bus (per process start and
per worker), ``n`` counts up from 1. A ``Last-Event-ID`` of another stream (a restart,
another worker) or older than the ring cannot be resumed: the subscriber gets a
``reset`` event first, meaning "refetch what you show". `close` (gateway shutdown)
ends every stream at once, so open streams never hold up the drain.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kairos_core import ServiceUnavailable

__all__ = [
    "METRICS",
    "Event",
    "EventBus",
    "Subscription",
    "TooManySubscribers",
]

#: The type of the 1 s metrics tick (not kept for replay).
METRICS: Final = "metrics"
LAGGED: Final = "lagged"
RESET: Final = "reset"


class TooManySubscribers(ServiceUnavailable):
    type = "too_many_subscribers"
    title = "Too many event subscribers"

    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", "5")]


@dataclass(frozen=True, slots=True)
class Event:
    """One event: ``id`` (``<stream>-<n>``), ``type`` and JSON ``data`` (never a secret:
    publishers put names, states and versions in it, no configuration values)."""

    id: str
    type: str
    data: Mapping[str, Any]
    #: Epoch seconds when it was published.
    at: float


class Subscription:
    """One stream's view of the bus: `next` gives its events in order."""

    __slots__ = ("_bus", "_queue", "_size", "_wake", "closed", "lagged")

    def __init__(self, bus: EventBus, size: int, first: list[Event]) -> None:
        self._bus = bus
        self._size = size
        self._queue: deque[Event] = deque(first)
        self._wake = asyncio.Event()
        if first:
            self._wake.set()
        #: Dropped for falling behind; the stream ends after the ``lagged`` event.
        self.lagged = False
        self.closed = False

    def offer(self, event: Event) -> None:
        if self.closed or self.lagged:
            return
        if len(self._queue) >= self._size:
            # Not read fast enough: rather than buffer without end, drop what is queued
            # and end the stream; the client catches up from the ring on reconnecting.
            self._queue.clear()
            self.lagged = True
            self._queue.append(self._bus.synthetic(LAGGED, {"queued": self._size}))
        else:
            self._queue.append(event)
        self._wake.set()

    async def next(self, wait_s: float) -> Event | None:
        """The next event, or None when ``wait_s`` passed without one.

        Raises `EOFError` when the stream is over: the bus closed, or this subscriber
        lagged and its ``lagged`` event was read.
        """
        if not self._queue:
            if self.closed or self.lagged:
                raise EOFError
            self._wake.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            except TimeoutError:
                return None
            if not self._queue:
                raise EOFError  # woken by close, nothing left
        return self._queue.popleft()

    def close(self) -> None:
        """End the stream: `next` gives what is queued still, then raises `EOFError`."""
        self.closed = True
        self._wake.set()
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(
        self,
        *,
        max_subscribers: int = 100,
        queue_size: int = 256,
        replay_size: int = 512,
    ) -> None:
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        #: Random per bus: ids from a restarted gateway or another worker never match.
        self.stream = secrets.token_hex(4)
        self._next = 1
        self._ring: deque[tuple[int, Event]] = deque(maxlen=replay_size)
        #: The highest number dropped from the ring: a resume point below it has gaps.
        self._forgotten = 0
        self._subscribers: set[Subscription] = set()
        #: Set while anyone subscribes (the metrics tick runs only then).
        self.watched = asyncio.Event()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _number(self) -> tuple[int, str]:
        n = self._next
        self._next += 1
        return n, f"{self.stream}-{n}"

    def synthetic(self, type_: str, data: Mapping[str, Any]) -> Event:
        """An event for one subscriber alone (``lagged``, ``reset``): numbered like the
        rest, so ids stay in order, but neither broadcast nor kept."""
        _, event_id = self._number()
        return Event(event_id, type_, data, time.time())

    def publish(self, type_: str, data: Mapping[str, Any]) -> Event:
        """Send an event to every subscriber now; never waits."""
        n, event_id = self._number()
        event = Event(event_id, type_, data, time.time())
        if type_ != METRICS:
            ring = self._ring
            if len(ring) == ring.maxlen:
                self._forgotten = ring[0][0]
            ring.append((n, event))
        for subscription in list(self._subscribers):
            subscription.offer(event)
        return event

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A new subscription; with ``last_event_id``, starting with the kept events
        after it (or a ``reset`` event when they cannot be told). Raises
        `TooManySubscribers`."""
        if self.closed:
            raise ServiceUnavailable("the gateway is shutting down")
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(
                f"{self.max_subscribers} event streams are open already; retry later"
            )
        first: list[Event] = []
        if last_event_id:
            after = self._resume_point(last_event_id.strip())
            if after is None:
                first.append(
                    self.synthetic(RESET, {"reason": "the events after Last-Event-ID are not kept"})
                )
            else:
                first = [event for n, event in self._ring if n > after]
        subscription = Subscription(self, self.queue_size, first)
        self._subscribers.add(subscription)
        self.watched.set()
        return subscription

    def _resume_point(self, last_event_id: str) -> int | None:
        stream, _, number = last_event_id.rpartition("-")
        if stream != self.stream or not number.isdigit():
            return None
        after = int(number)
        if after < self._forgotten or after >= self._next:
            return None
        return after

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        if not self._subscribers:
            self.watched.clear()

    def close(self) -> None:
        """End every stream (shutdown); later subscriptions are refused."""
        self.closed = True
        for subscription in list(self._subscribers):
            subscription.close()
