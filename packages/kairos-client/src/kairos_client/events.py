"""`GET /api/events` for Python: `EventStream`, an async iterator of `GatewayEvent`.

::

    async with client.events() as stream:
        async for event in stream:
            print(event.type, event.data)

The stream ends (the loop finishes) when the gateway ends it: a shutdown, or a
``lagged`` event sent to a reader too slow to keep up. A broken connection raises
`GatewayUnavailable`; nothing heard for ``read_timeout`` seconds (the gateway sends a
keep-alive comment every 15 s) raises `GatewayTimeout`.

It does not reconnect by itself: what to do meanwhile (show "reconnecting", back off,
give up) is the caller's choice. Resuming takes one argument, since the stream keeps
the id of the last event read::

    last = None
    while True:
        try:
            async with client.events(last_event_id=last) as stream:
                async for event in stream:
                    last = stream.last_event_id
                    ...
        except GatewayUnavailable:
            await asyncio.sleep(2)

The gateway replays the events after ``last_event_id`` that it still keeps; when it
cannot (it restarted, it is another worker process, too much happened) the first
event is ``reset``: refetch whatever you show.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import GatewayTimeout, InvalidResponse, error_for
from .transport import RawResponse

if TYPE_CHECKING:
    from collections.abc import Callable

    from kairos_core import Problem

    from .transport import RawStream, StreamingTransport

__all__ = ["EventStream", "GatewayEvent", "SseParser"]


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """One event: ``type`` (``config.applied``, ``backend.health``, ``metrics``, ...),
    ``data`` (its JSON object, with ``at``, an ISO 8601 time) and ``id`` (what
    ``Last-Event-ID`` resumes after)."""

    type: str
    data: dict[str, Any]
    id: str | None = None

    @property
    def at(self) -> str | None:
        at = self.data.get("at")
        return at if isinstance(at, str) else None


@dataclass(slots=True)
class SseParser:
    """Server-Sent Events, one line at a time (the WHATWG event-stream rules): `feed`
    returns the event a blank line completes. Comments are skipped; a message
    without data is no event."""

    last_event_id: str | None = None
    retry_ms: int | None = None
    _type: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> GatewayEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> GatewayEvent | None:
        data, type_ = self._data, self._type or "message"
        self._data, self._type = [], ""
        if not data:
            return None
        text = "\n".join(data)
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise InvalidResponse(f"an event's data is not JSON: {text[:80]!r}") from exc
        if not isinstance(payload, dict):
            raise InvalidResponse(f"an event's data is not a JSON object: {text[:80]!r}")
        return GatewayEvent(type_, payload, self.last_event_id)


class EventStream:
    """The events of one `GET /api/events` (see the module docstring). Opened on
    entering ``async with`` (or at the first iteration); closed on leaving it, at the
    end of the stream, or by `aclose`."""

    def __init__(
        self,
        transport: StreamingTransport,
        url: str,
        headers: dict[str, str],
        *,
        open_timeout: float,
        read_timeout: float,
        problem: Callable[[RawResponse], Problem],
        last_event_id: str | None = None,
    ) -> None:
        self._transport = transport
        self._url = url
        self._headers = headers
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._problem = problem
        self._parser = SseParser(last_event_id=last_event_id)
        self._stack: AsyncExitStack | None = None
        self._raw: RawStream | None = None
        self._ended = False

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event read (or the one given): pass it as
        ``last_event_id=`` to resume after it."""
        return self._parser.last_event_id

    async def _open(self) -> RawStream:
        if self._raw is not None:
            return self._raw
        headers = dict(self._headers)
        if self._parser.last_event_id:
            headers["Last-Event-ID"] = self._parser.last_event_id
        stack = AsyncExitStack()
        try:
            async with asyncio.timeout(self._open_timeout):
                raw = await stack.enter_async_context(
                    self._transport.stream(self._url, headers, read_timeout=self._read_timeout)
                )
                if raw.status != 200:
                    body = await raw.read()
                    answer = RawResponse(raw.status, dict(raw.headers), body)
                    raise error_for(raw.status, self._problem(answer))
        except TimeoutError as exc:
            await stack.aclose()
            raise GatewayTimeout(
                f"GET {self._url}: no answer within {self._open_timeout:g}s"
            ) from exc
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._raw = stack, raw
        return raw

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> GatewayEvent:
        if self._ended:
            raise StopAsyncIteration
        raw = await self._open()
        while True:
            line = await raw.readline()
            if not line:
                await self.aclose()
                raise StopAsyncIteration
            event = self._parser.feed(line.decode("utf-8", "replace"))
            if event is not None:
                return event

    async def aclose(self) -> None:
        """Close the connection; iterating afterwards ends at once."""
        self._ended = True
        stack, self._stack, self._raw = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
