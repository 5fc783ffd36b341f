"""A dedicated upstream connection for a WebSocket upgrade (never pooled).

`open_tunnel` connects (TCP, or TLS with the pool's client contexts), writes the
upgrade request, and reads the response head. A valid ``101`` comes back with the
connection's asyncio streams: bytes the backend sent right after the head stay in the
reader. A ``101`` that does not complete the handshake (no ``Upgrade: websocket``, or
a ``Sec-WebSocket-Accept`` that does not answer the client's key) is an
`UpstreamProtocolError`. Any other status comes back with its whole body (at most
`MAX_BODY` bytes) and the connection closed. Every failure is an `UpstreamError`, as
with the pooled client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .endpoint import Endpoint
from .errors import UpstreamClosed, UpstreamProtocolError, upstream_errors
from .tls import client_ssl_context

__all__ = ["MAX_BODY", "TunnelResponse", "accept_key", "open_tunnel"]

#: Largest body of a refusal (a non-101 answer) relayed to the client.
MAX_BODY = 1 << 20
#: Largest response head accepted from the backend.
MAX_HEAD = 64 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key``."""
    digest = hashlib.sha1(key.strip().encode("latin-1") + _GUID, usedforsecurity=False)
    return base64.b64encode(digest.digest()).decode("ascii")


@dataclass(slots=True)
class TunnelResponse:
    """The backend's answer to an upgrade request. ``reader`` and ``writer`` are set
    only for a ``101``: the caller then owns the connection and must close it."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    def header(self, lower_name: str) -> str | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


@dataclass(slots=True)
class _Parsed:
    """httptools callbacks: the head, then (for a non-101) the body."""

    reason: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    head_done: bool = False
    body: bytearray = field(default_factory=bytearray)
    done: bool = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > MAX_BODY:
            raise UpstreamProtocolError(f"the backend's refusal is over {MAX_BODY} bytes")

    def on_message_complete(self) -> None:
        self.done = True


def _request(target: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamProtocolError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connect(
    endpoint: Endpoint, connect_timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with upstream_errors("connect"):
        async with asyncio.timeout(connect_timeout):
            if endpoint.scheme == "https":
                return await asyncio.open_connection(
                    endpoint.host,
                    endpoint.port,
                    ssl=client_ssl_context(endpoint),
                    server_hostname=endpoint.host,
                    limit=MAX_HEAD,
                )
            return await asyncio.open_connection(endpoint.host, endpoint.port, limit=MAX_HEAD)


def _check_handshake(response: TunnelResponse, key: str | None) -> None:
    upgrade = (response.header("upgrade") or "").strip().lower()
    if upgrade != "websocket":
        raise UpstreamProtocolError("the backend's 101 does not upgrade to websocket")
    if key is not None and response.header("sec-websocket-accept") != accept_key(key):
        raise UpstreamProtocolError("the backend's Sec-WebSocket-Accept does not match the key")


async def open_tunnel(
    endpoint: Endpoint,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> TunnelResponse:
    """Send ``GET target`` with ``headers`` (``Host`` and the upgrade headers included)
    on a new connection to ``endpoint``; ``read_timeout`` bounds each wait for the
    backend's answer. See the module docstring for what comes back."""
    data = _request(target, headers)
    key = next((v for n, v in headers if n.lower() == "sec-websocket-key"), None)
    reader, writer = await _connect(endpoint, connect_timeout)
    try:
        with upstream_errors("read"):
            writer.write(data)
            async with asyncio.timeout(read_timeout):
                await writer.drain()
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    raise UpstreamClosed("the backend closed before answering") from exc
                except asyncio.LimitOverrunError as exc:
                    raise UpstreamProtocolError("the backend's response head is too big") from exc
            parsed = _Parsed()
            parser = HttpResponseParser(parsed)
            upgraded = False
            try:
                parser.feed_data(head)
            except HttpParserUpgrade:
                upgraded = True
            status = parser.get_status_code()
            response = TunnelResponse(status, parsed.reason.decode("latin-1"), parsed.headers)
            if status == 101:
                if not upgraded:
                    raise UpstreamProtocolError("the backend's 101 is not an upgrade")
                _check_handshake(response, key)
                response.reader, response.writer = reader, writer
                return response
            while not parsed.done:
                async with asyncio.timeout(read_timeout):
                    chunk = await reader.read(65536)
                if not chunk:
                    break  # a body delimited by the connection's end
                parser.feed_data(chunk)
            response.body = bytes(parsed.body)
    except HttpParserError as exc:
        writer.transport.abort()
        raise UpstreamProtocolError(f"invalid response: {exc}") from exc
    except BaseException:
        writer.transport.abort()
        raise
    writer.close()
    return response
