"""Helpers for the client tests: a client on a running gateway, and a raw TCP server
that misbehaves on purpose (drops connections, never answers, answers garbage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from kairos_client import AiohttpTransport, KairosClient, RawResponse

from tests.conftest import RunningGateway

LOOPBACK = "127.0.0.1"


def client_for(gw: RunningGateway, **kwargs: object) -> KairosClient:
    return KairosClient(gw.url, **kwargs)  # type: ignore[arg-type]


class CountingTransport(AiohttpTransport):
    """The default transport, counting the client's attempts (calls to `send`)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        self.attempts += 1
        return await super().send(method, url, headers, body)


@dataclass
class RawServer:
    """Accepts connections on a loopback port; the first ``drop`` connections are closed
    after the request head arrives, later ones get ``answer`` (or nothing at all when
    ``hang``). ``connections`` counts accepted connections (= client attempts)."""

    answer: bytes = b""
    drop: int = 0
    hang: bool = False
    connections: int = 0
    port: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            async with asyncio.timeout(10):
                await reader.readuntil(b"\r\n\r\n")
                if self.hang:
                    await self._release.wait()
                elif self.connections > self.drop:
                    writer.write(self.answer)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def http_answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@asynccontextmanager
async def raw_server(**kwargs: object) -> AsyncIterator[RawServer]:
    state = RawServer(**kwargs)  # type: ignore[arg-type]
    server = await asyncio.start_server(state._handle, LOOPBACK, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        state._release.set()
        server.close()
        async with asyncio.timeout(10):
            await server.wait_closed()
