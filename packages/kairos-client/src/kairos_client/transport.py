"""The transport seam: how `KairosClient` sends one HTTP request.

The client applies the policy (URLs, auth header, timeouts, retries, error mapping,
parsing into models) and calls `Transport.send` once per attempt. `AiohttpTransport`
is the default; `MockTransport` answers from a function in memory, so code that uses
the client can be tested without a gateway. Both also open streams
(`StreamingTransport.stream`, for `KairosClient.events`): the answer's head at once,
then its body line by line as it arrives.

A transport reports a failure to reach the server by raising `GatewayUnavailable` (or
`GatewayTimeout`); any HTTP answer, error statuses included, is a `RawResponse`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import aiohttp
from yarl import URL

from .errors import GatewayTimeout, GatewayUnavailable

__all__ = [
    "AiohttpTransport",
    "MockTransport",
    "RawResponse",
    "RawStream",
    "StreamingTransport",
    "Transport",
    "TransportRequest",
]


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One HTTP answer, body read whole (management API answers are small)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @classmethod
    def json(
        cls, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        """An ``application/json`` answer (``application/problem+json`` for a dict with
        ``type``/``title``/``status`` and an error status), for in-memory transports."""
        problem = status >= 400 and isinstance(payload, dict) and "title" in payload
        content_type = "application/problem+json" if problem else "application/json"
        return cls(
            status,
            {"Content-Type": content_type, **(headers or {})},
            json.dumps(payload).encode(),
        )


@dataclass(frozen=True, slots=True)
class TransportRequest:
    """What the client asks a transport to send. ``url`` is already percent-encoded."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None


@runtime_checkable
class Transport(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        """Send one request; ``url`` is absolute and already percent-encoded (send it
        as is). Raise `GatewayUnavailable` / `GatewayTimeout` when there is no answer."""
        ...

    async def aclose(self) -> None:
        """Release connections; the client calls it when it closes."""
        ...


class RawStream(Protocol):
    """An answer whose body is read as it arrives (an event stream)."""

    status: int
    headers: Mapping[str, str]

    async def readline(self) -> bytes:
        """The next line, with its ``\\n``; ``b""`` when the body has ended. Raises
        `GatewayUnavailable` when the connection breaks, `GatewayTimeout` when nothing
        arrived within the stream's read timeout."""
        ...

    async def read(self) -> bytes:
        """The rest of the body, whole (for an error answer)."""
        ...


@runtime_checkable
class StreamingTransport(Protocol):
    def stream(
        self, url: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> AbstractAsyncContextManager[RawStream]:
        """``GET url`` and hold the answer open while the ``async with`` lasts."""
        ...


@contextmanager
def _map_aiohttp_errors(method: str, url: str) -> Iterator[None]:
    """aiohttp's exceptions as ours, most specific first (the one place that knows them)."""
    target = f"{method} {URL(url, encoded=True).with_query(None)}"
    try:
        yield
    except aiohttp.ServerTimeoutError as exc:  # connect or read timeout (also a TimeoutError)
        raise GatewayTimeout(f"{target}: no answer in time ({exc})") from exc
    except aiohttp.ClientConnectorError as exc:
        raise GatewayUnavailable(f"{target}: cannot connect: {exc.os_error}") from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        raise GatewayUnavailable(f"{target}: the connection broke off: {exc}") from exc
    except aiohttp.ClientConnectionError as exc:
        raise GatewayUnavailable(f"{target}: connection error: {exc}") from exc
    except aiohttp.ClientResponseError as exc:  # a malformed HTTP answer
        raise GatewayUnavailable(f"{target}: bad HTTP response: {exc.message}") from exc
    except TimeoutError as exc:
        raise GatewayTimeout(f"{target}: no answer in time") from exc


class AiohttpTransport:
    """Sends requests over one `aiohttp.ClientSession` (keep-alive pooled).

    The session is created on first use and closed by `aclose`; pass ``session=`` to
    use one of your own (then it is yours to close). ``timeout`` bounds each request
    as a whole; ``None`` leaves that to the caller (`KairosClient` always sets one).
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the aiohttp session given to AiohttpTransport is closed")
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        session = self._session_now()
        with _map_aiohttp_errors(method, url):
            async with session.request(
                method,
                URL(url, encoded=True),  # keep %2F in route paths as sent
                headers=dict(headers),
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                content = await response.read()
                return RawResponse(response.status, dict(response.headers.items()), content)

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[RawStream]:
        session = self._session_now()
        # No total timeout (the stream lasts); a read timeout notices a dead one.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.sock_connect, sock_read=read_timeout
        )
        with _map_aiohttp_errors("GET", url):
            async with session.get(
                URL(url, encoded=True),
                headers=dict(headers),
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                yield _AiohttpStream(response, url)

    async def aclose(self) -> None:
        session = self._session
        if session is not None and self._owns_session and not session.closed:
            await session.close()
        self._session = None if self._owns_session else session


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status
        self.headers: Mapping[str, str] = dict(response.headers.items())

    async def readline(self) -> bytes:
        with _map_aiohttp_errors("GET", self._url):
            return await self._response.content.readline()

    async def read(self) -> bytes:
        with _map_aiohttp_errors("GET", self._url):
            return await self._response.read()


class _BodyStream:
    """A whole `RawResponse` read as a stream (`MockTransport`)."""

    def __init__(self, response: RawResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self._lines = response.body.splitlines(keepends=True)

    async def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""

    async def read(self) -> bytes:
        rest, self._lines = b"".join(self._lines), []
        return rest


Handler = Callable[[TransportRequest], RawResponse | Awaitable[RawResponse]]


class MockTransport:
    """A transport that answers every request by calling ``handler`` (sync or async),
    for testing code that uses `KairosClient` without a gateway. ``requests`` records
    what was sent; the handler may raise `GatewayUnavailable` to simulate an outage::

        def handler(request: TransportRequest) -> RawResponse:
            return RawResponse.json(200, {"status": "alive"})

        async with KairosClient(transport=MockTransport(handler)) as client:
            await client.live()
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[TransportRequest] = []
        self.closed = False

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        request = TransportRequest(method, url, dict(headers), body)
        self.requests.append(request)
        result = self.handler(request)
        return result if isinstance(result, RawResponse) else await result

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[RawStream]:
        """The handler's answer to ``GET url``, its body given line by line (a whole
        event stream written out in advance, then its end)."""
        yield _BodyStream(await self.send("GET", url, headers, None))

    async def aclose(self) -> None:
        self.closed = True
