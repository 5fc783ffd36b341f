"""A dedicated upstream connection for a WebSocket upgrade (never pooled).

`open_tunnel` connects (TCP, or TLS with the pool's client contexts), writes the
upgrade request, and reads the response head. A valid ``101`` comes back with the
connection's `TunnelProtocol`, ready to be relayed (`TunnelProtocol.relay`); bytes the
backend sent right after the head are kept for it. A ``101`` that does not complete
the handshake (no ``Upgrade: websocket``, or a ``Sec-WebSocket-Accept`` that does not
answer the client's key) is an `UpstreamProtocolError`. Any other status comes back
with its whole body (at most `MAX_BODY` bytes) and the connection closed. Every
failure is an `UpstreamError`, as with the pooled client.

After the handshake the protocol is a pipe end: what the backend sends goes to a sink
(``data_received`` calls it directly: no buffer, no task per chunk), `write` sends to
the backend, and `writable` is a future that resolves while the backend's socket
buffer is below its high-water mark (`pause_writing` / `resume_writing`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Sequence
from typing import cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .endpoint import Endpoint
from .errors import UpstreamClosed, UpstreamError, UpstreamProtocolError, upstream_errors
from .tls import client_ssl_context

__all__ = ["MAX_BODY", "TunnelProtocol", "TunnelResponse", "accept_key", "open_tunnel"]

#: Largest body of a refusal (a non-101 answer) relayed to the client.
MAX_BODY = 1 << 20
#: Largest response head accepted from the backend.
MAX_HEAD = 64 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value that answers ``Sec-WebSocket-Key: key``."""
    digest = hashlib.sha1(key.strip().encode("latin-1") + _GUID, usedforsecurity=False)
    return base64.b64encode(digest.digest()).decode("ascii")


class TunnelProtocol(asyncio.Protocol):
    """The upstream end of a WebSocket tunnel: the handshake's answer, then the relay."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser: HttpResponseParser | None = HttpResponseParser(self)
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self._head_bytes = 0
        #: Resolves once the response head (status and headers) was parsed.
        self.head: asyncio.Future[None] = loop.create_future()
        #: Resolves once a non-101 response is complete (or the connection ended).
        self.complete: asyncio.Future[None] = loop.create_future()
        self.upgraded = False
        #: Bytes the backend sent after its 101, before the relay began.
        self._early = bytearray()
        self._sink: Callable[[bytes], None] | None = None
        self._on_lost: Callable[[], None] | None = None
        self.lost = False
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(data)
            return
        if self.upgraded:
            self._early += data
            return
        parser = self._parser
        if parser is None:  # the connection is gone
            return
        if not self.head.done():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD + MAX_BODY:
                self._fail(UpstreamProtocolError("the backend's answer is too big"))
                return
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self.upgraded = True
            self._parser = None  # it holds this protocol's methods: no cycle left behind
            self._early += data[cast(int, exc.args[0]) :]
            self.pause_reading()  # until the relay starts: nothing piles up meanwhile
        except HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid response: {exc}"))
        except UpstreamError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close the transport: a tunnel end that stops sending is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._parser = None
        if not self.head.done():
            self.head.set_exception(UpstreamClosed("the backend closed before answering"))
        if not self.complete.done():
            self.complete.set_result(None)  # a body delimited by the connection's end
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)
        on_lost = self._on_lost
        # Drop the relay's callbacks: they hold the tunnel, which holds this protocol.
        self._sink = self._on_lost = None
        if on_lost is not None:
            on_lost()

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        # A 101's bytes after the head are the tunnel's: `feed_data` then raises
        # HttpParserUpgrade with their offset, before anyone awaiting `head` runs.
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > MAX_BODY:
            raise UpstreamProtocolError(f"the backend's refusal is over {MAX_BODY} bytes")

    def on_message_complete(self) -> None:
        if not self.complete.done():
            self.complete.set_result(None)

    # -- the relay -------------------------------------------------------------------------

    def relay(self, sink: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        """From now on pass what the backend sends to ``sink`` (what came early first),
        and call ``on_lost`` once the connection is gone."""
        self._sink = sink
        self._on_lost = on_lost
        if self.lost:
            self._sink = self._on_lost = None
        else:
            # Reading resumes on a later loop turn, after the early bytes below (which
            # may pause it again, if the client cannot take them at once).
            self.resume_reading()
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            sink(early)
        if self.lost:
            on_lost()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    @property
    def writable(self) -> asyncio.Future[None] | None:
        """A future to await before writing more (the backend's buffer is full), or
        None when writing may go on."""
        writable = self._writable
        return None if writable is None or writable.done() else writable

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written is sent."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: UpstreamError) -> None:
        for future in (self.head, self.complete):
            if not future.done():
                future.set_exception(exc)
        self.abort()


class TunnelResponse:
    """The backend's answer to an upgrade request. For a ``101``, ``protocol`` is the
    open connection: the caller owns it and must close it."""

    __slots__ = ("body", "headers", "protocol", "reason", "status")

    def __init__(self, protocol: TunnelProtocol) -> None:
        self.protocol = protocol
        self.status = protocol.status
        self.reason = protocol.reason.decode("latin-1")
        self.headers = protocol.headers
        self.body = bytes(protocol.body)

    def header(self, lower_name: str) -> str | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    def abort(self) -> None:
        self.protocol.abort()


def _request(target: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamProtocolError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _check_handshake(response: TunnelResponse, key: str | None) -> None:
    upgrade = (response.header("upgrade") or "").strip().lower()
    if upgrade != "websocket":
        raise UpstreamProtocolError("the backend's 101 does not upgrade to websocket")
    if key is not None and response.header("sec-websocket-accept") != accept_key(key):
        raise UpstreamProtocolError("the backend's Sec-WebSocket-Accept does not match the key")


async def _connect(endpoint: Endpoint, connect_timeout: float) -> TunnelProtocol:
    loop = asyncio.get_running_loop()
    with upstream_errors("connect"):
        async with asyncio.timeout(connect_timeout):
            if endpoint.scheme == "https":
                _, protocol = await loop.create_connection(
                    lambda: TunnelProtocol(loop),
                    endpoint.host,
                    endpoint.port,
                    ssl=client_ssl_context(endpoint),
                    server_hostname=endpoint.host,
                )
            else:
                _, protocol = await loop.create_connection(
                    lambda: TunnelProtocol(loop), endpoint.host, endpoint.port
                )
    return protocol


async def open_tunnel(
    endpoint: Endpoint,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> TunnelResponse:
    """Send ``GET target`` with ``headers`` (``Host`` and the upgrade headers included)
    on a new connection to ``endpoint``; ``read_timeout`` bounds the wait for the head
    and, for a refusal, for its body. See the module docstring for what comes back."""
    data = _request(target, headers)
    key = next((v for n, v in headers if n.lower() == "sec-websocket-key"), None)
    protocol = await _connect(endpoint, connect_timeout)
    try:
        with upstream_errors("read"):
            protocol.write(data)
            async with asyncio.timeout(read_timeout):
                await protocol.head
            response = TunnelResponse(protocol)
            if response.status == 101:
                _check_handshake(response, key)
                return response
            async with asyncio.timeout(read_timeout):
                await protocol.complete
            response.body = bytes(protocol.body)
    except BaseException:
        protocol.abort()
        raise
    protocol.close()
    return response
