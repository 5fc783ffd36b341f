"""Keep-alive connection pool and the request entry point."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from .connection import UpstreamConnection
from .endpoint import Endpoint
from .errors import StaleConnection, UpstreamClosed, upstream_errors
from .request import build_request
from .response import UpstreamResponse
from .tls import client_ssl_context

__all__ = ["PoolStats", "UpstreamPool"]


@dataclass(slots=True)
class PoolStats:
    """Monotonic counters (tests and benchmarks use them to prove reuse)."""

    connections_opened: int = 0
    connections_by_endpoint: dict[Endpoint, int] = field(default_factory=dict)
    requests_sent: int = 0
    reused: int = 0  # requests sent on a connection taken from the idle pool
    stale: int = 0  # reused connections found closed before any response byte


class UpstreamPool:
    """Pooled HTTP/1.1 client for upstream requests.

    Per :class:`Endpoint`, idle keep-alive connections are kept in a LIFO list (the most
    recently used one is the least likely to have been closed by the server). At most
    ``max_idle_per_endpoint`` are kept, each for at most ``idle_timeout_s``. A pool belongs
    to the event loop that first uses it.
    """

    __slots__ = (
        "_closed",
        "_conns",
        "_idle",
        "_idle_timeout",
        "_loop",
        "_max_header_bytes",
        "_max_idle",
        "_sweep_handle",
        "stats",
    )

    def __init__(
        self,
        *,
        max_idle_per_endpoint: int = 64,
        idle_timeout_s: float = 30.0,
        max_header_bytes: int = 65536,
    ) -> None:
        self._max_idle = max_idle_per_endpoint
        self._idle_timeout = idle_timeout_s
        self._max_header_bytes = max_header_bytes
        self._idle: dict[Endpoint, list[UpstreamConnection]] = {}
        self._conns: set[UpstreamConnection] = set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.stats = PoolStats()

    @property
    def open_connections(self) -> int:
        """Connections currently open (idle or busy)."""
        return len(self._conns)

    def idle_connections(self, endpoint: Endpoint) -> int:
        """Idle connections currently pooled for ``endpoint``."""
        return len(self._idle.get(endpoint, ()))

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes = b"",
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        """Send one request and return as soon as the final response head is parsed.

        ``target`` is written byte for byte; ``headers`` must include ``Host``. The body is
        sent with ``Content-Length`` (never chunked). ``connect_timeout`` bounds TCP connect +
        TLS handshake; ``read_timeout`` bounds each silence of the upstream (waiting for the
        head, then between body chunks). The caller must read the body to the end or call
        ``abort()`` on the response, else the connection stays checked out.

        Raises ``ValueError`` for an invalid method/target/header (nothing is sent) and
        :class:`UpstreamError` subclasses for upstream failures: :class:`StaleConnection`
        when a reused connection dies before any response byte arrived. The pool never
        replays a request; whether to (and what it costs) is the caller's retry decision.
        """
        if self._closed:
            raise RuntimeError("UpstreamPool is closed")
        data, req_close = build_request(method, target, headers, body)
        is_head = method == "HEAD"
        conn = self._acquire(endpoint)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(endpoint, connect_timeout)
        else:
            self.stats.reused += 1
        self.stats.requests_sent += 1
        waiter = conn.send(data, is_head=is_head, req_close=req_close, read_timeout=read_timeout)
        try:
            return await waiter
        except UpstreamClosed as exc:
            if not reused or conn.got_response_bytes:
                raise
            # The server closed the kept-alive connection while our request was on its way.
            self.stats.stale += 1
            raise StaleConnection(str(exc)) from exc
        except asyncio.CancelledError:
            _cancel_exchange(conn, waiter)
            raise

    async def close(self) -> None:
        """Close idle connections and abort busy ones (their requests/bodies fail with
        :class:`UpstreamClosed`). Idempotent; the pool cannot be used afterwards."""
        self._closed = True
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        self._idle.clear()
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        if conns:
            # Let the transports deliver connection_lost before the caller moves on.
            for _ in range(3):
                await asyncio.sleep(0)

    # -- internals ------------------------------------------------------------------------

    def _acquire(self, endpoint: Endpoint) -> UpstreamConnection | None:
        idle = self._idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if not conn.usable:
                continue
            if conn.loop.time() - conn.idle_since < self._idle_timeout:
                return conn
            # LIFO: everything below the newest expired connection is older still.
            conn.close()
            for old in idle:
                old.close()
            idle.clear()
        return None

    async def _connect(self, endpoint: Endpoint, connect_timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        max_header_bytes = self._max_header_bytes

        def factory() -> UpstreamConnection:
            return UpstreamConnection(endpoint, self, loop, max_header_bytes)

        with upstream_errors("connect"):
            if endpoint.scheme == "https":
                ssl_context = client_ssl_context(endpoint)
                async with asyncio.timeout(connect_timeout):
                    _, conn = await loop.create_connection(
                        factory,
                        endpoint.host,
                        endpoint.port,
                        ssl=ssl_context,
                        server_hostname=endpoint.host,
                    )
            else:
                async with asyncio.timeout(connect_timeout):
                    _, conn = await loop.create_connection(factory, endpoint.host, endpoint.port)
        if self._closed:
            conn.abort()
            raise RuntimeError("UpstreamPool is closed")
        stats = self.stats
        stats.connections_opened += 1
        by_endpoint = stats.connections_by_endpoint
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + 1
        return conn

    def _connection_made(self, conn: UpstreamConnection) -> None:
        self._conns.add(conn)

    def _connection_lost(self, conn: UpstreamConnection) -> None:
        self._conns.discard(conn)
        idle = self._idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    def _release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if not reusable or self._closed:
            conn.close()
            return
        idle = self._idle.get(conn.endpoint)
        if idle is None:
            idle = self._idle[conn.endpoint] = []
        if len(idle) >= self._max_idle:
            conn.close()
            return
        idle.append(conn)
        if self._sweep_handle is None:
            self._sweep_handle = conn.loop.call_at(
                conn.idle_since + self._idle_timeout, self._sweep
            )

    def _sweep(self) -> None:
        """Close expired idle connections; one pool-wide timer, armed only while any idle
        connection exists."""
        self._sweep_handle = None
        loop = self._loop
        if loop is None or self._closed:
            return
        cutoff = loop.time() - self._idle_timeout
        oldest: float | None = None
        for endpoint, idle in list(self._idle.items()):
            expired = 0
            for conn in idle:  # oldest first
                if conn.idle_since > cutoff:
                    break
                expired += 1
            if expired:
                for conn in idle[:expired]:
                    conn.close()
                del idle[:expired]
            if not idle:
                del self._idle[endpoint]
            elif oldest is None or idle[0].idle_since < oldest:
                oldest = idle[0].idle_since
        if oldest is not None:
            self._sweep_handle = loop.call_at(oldest + self._idle_timeout, self._sweep)


def _cancel_exchange(conn: UpstreamConnection, waiter: asyncio.Future[UpstreamResponse]) -> None:
    """The caller was cancelled while waiting for the response head."""
    if waiter.cancelled():
        conn.abort_if_waiting(waiter)
    elif waiter.exception() is None:
        # The head arrived just before the cancellation: nobody will read this body.
        waiter.result().abort()
