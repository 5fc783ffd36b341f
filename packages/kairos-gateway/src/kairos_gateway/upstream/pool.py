"""Keep-alive connection pool and the request entry point.

Per endpoint, the pool may be given `PoolLimits` with each request: at most
``max_connections`` open (connecting, busy and idle together); a request that finds
every connection busy waits in a FIFO queue of at most ``max_pending`` requests for at
most ``pending_timeout_s``, and gets the next connection released (handed over
directly) or the slot of the next one closed. Past either bound it fails with
`UpstreamSaturated`, before anything was sent. Idle connections are kept up to the
limit, so a busy backend's connections are reused rather than opened and closed per
request. Without limits (the health checker's pool) an endpoint is unbounded and keeps
at most ``max_idle_per_endpoint`` idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .connection import UpstreamConnection
from .endpoint import Endpoint
from .errors import StaleConnection, UpstreamClosed, UpstreamSaturated, upstream_errors
from .request import BodySource, build_request, build_streamed_head
from .response import UpstreamResponse
from .tls import client_ssl_context

__all__ = ["EndpointStats", "PoolLimits", "PoolStats", "UpstreamPool"]

#: A waiter's result when a connection slot, not a connection, was freed for it.
_SLOT: Final = object()


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Connections and queue for one endpoint (see the module docstring)."""

    max_connections: int
    max_pending: int
    pending_timeout_s: float


_UNLIMITED = PoolLimits(max_connections=sys.maxsize, max_pending=0, pending_timeout_s=0.0)


class _Host:
    """What the pool keeps per endpoint."""

    __slots__ = (
        "connecting",
        "idle",
        "limits",
        "max_idle",
        "open",
        "opened",
        "queue_s",
        "saturated",
        "waiters",
    )

    def __init__(self, limits: PoolLimits, max_idle: int) -> None:
        self.limits = limits
        self.max_idle = max_idle
        self.idle: list[UpstreamConnection] = []  # LIFO: the newest last
        self.connecting = 0  # connects in progress, or reserved for a waiter
        self.open = 0  # connections made and not yet lost
        self.waiters: deque[asyncio.Future[object]] = deque()
        self.opened = 0
        self.saturated = 0
        self.queue_s = 0.0  # total seconds requests spent waiting in the queue


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One endpoint's connections now, its limits, and totals since start."""

    open: int
    idle: int
    busy: int
    pending: int
    max_connections: int
    max_pending: int
    opened_total: int
    saturated_total: int
    queue_seconds_total: float


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
        "_hosts",
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
        self._hosts: dict[Endpoint, _Host] = {}
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
        host = self._hosts.get(endpoint)
        return 0 if host is None else len(host.idle)

    def endpoint_stats(self, endpoint: Endpoint) -> EndpointStats | None:
        """``endpoint``'s connections and queue, or None if it was never used."""
        host = self._hosts.get(endpoint)
        if host is None:
            return None
        limits = host.limits
        return EndpointStats(
            open=host.open,
            idle=len(host.idle),
            busy=host.open - len(host.idle),
            pending=len(host.waiters),
            max_connections=limits.max_connections,
            max_pending=limits.max_pending,
            opened_total=host.opened,
            saturated_total=host.saturated,
            queue_seconds_total=host.queue_s,
        )

    async def request(
        self,
        endpoint: Endpoint,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | BodySource = b"",
        *,
        connect_timeout: float,
        read_timeout: float,
        limits: PoolLimits | None = None,
    ) -> UpstreamResponse:
        """Send one request and return as soon as the final response head is parsed.

        ``target`` is written byte for byte; ``headers`` must include ``Host``. A ``bytes``
        body is sent with the head, with ``Content-Length``; a `BodySource` after it, as
        it arrives, with its length or chunked. ``connect_timeout`` bounds TCP connect +
        TLS handshake; ``read_timeout`` bounds each silence of the upstream (waiting for the
        head, then between body chunks). The caller must read the body to the end or call
        ``abort()`` on the response, else the connection stays checked out.

        ``limits`` bound the endpoint's connections and queue (None: unbounded);
        `UpstreamSaturated` when no connection could be had within them.

        Raises ``ValueError`` for an invalid method/target/header (nothing is sent) and
        :class:`UpstreamError` subclasses for upstream failures: :class:`StaleConnection`
        when a reused connection dies before any response byte arrived. The pool never
        replays a request; whether to (and what it costs) is the caller's retry decision.
        """
        if self._closed:
            raise RuntimeError("UpstreamPool is closed")
        if isinstance(body, bytes):
            data, req_close = build_request(method, target, headers, body)
            source = None
        else:
            data, req_close = build_streamed_head(method, target, headers, body.length)
            source = body
        is_head = method == "HEAD"
        host = self._host(endpoint, limits)
        conn = self._acquire(host)
        reused = conn is not None
        if conn is None:
            if host.connecting + host.open < host.limits.max_connections:
                host.connecting += 1
                conn = await self._connect(endpoint, host, connect_timeout)
            else:
                got = await self._queue(host)
                if got is _SLOT:
                    conn = await self._connect(endpoint, host, connect_timeout)
                else:
                    assert isinstance(got, UpstreamConnection)
                    conn = got
                    reused = True
                    self.stats.reused += 1
        else:
            self.stats.reused += 1
        self.stats.requests_sent += 1
        waiter = conn.send(
            data, is_head=is_head, req_close=req_close, read_timeout=read_timeout, body=source
        )
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
        for host in self._hosts.values():
            host.idle.clear()
            while host.waiters:
                waiter = host.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(UpstreamClosed("the upstream pool is closed"))
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        if conns:
            # Let the transports deliver connection_lost before the caller moves on.
            for _ in range(3):
                await asyncio.sleep(0)

    # -- internals ------------------------------------------------------------------------

    def retain(self, keep: set[Endpoint]) -> None:
        """Forget endpoints not in ``keep`` that hold no connection and no waiter (a
        backend that left the configuration); the rest go when their last one does."""
        for endpoint, host in list(self._hosts.items()):
            idle = not (host.open or host.connecting or host.waiters)
            if endpoint not in keep and idle:
                del self._hosts[endpoint]

    def _host(self, endpoint: Endpoint, limits: PoolLimits | None) -> _Host:
        host = self._hosts.get(endpoint)
        if host is None:
            host = self._hosts[endpoint] = _Host(limits or _UNLIMITED, self._max_idle)
        elif limits is not None and limits is not host.limits:
            host.limits = limits  # a new configuration; the next release or close applies it
            self._wake(host)
        if limits is not None:
            host.max_idle = limits.max_connections
        return host

    def _acquire(self, host: _Host) -> UpstreamConnection | None:
        idle = host.idle
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

    async def _queue(self, host: _Host) -> object:
        """Wait for a connection (or a connection slot) of ``host``, first come first
        served; `UpstreamSaturated` past ``max_pending`` or ``pending_timeout_s``."""
        limits = host.limits
        if len(host.waiters) >= limits.max_pending:
            host.saturated += 1
            raise UpstreamSaturated(
                f"{host.open} connections busy and {len(host.waiters)} requests waiting"
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        host.waiters.append(waiter)
        started = loop.time()
        try:
            async with asyncio.timeout(limits.pending_timeout_s):
                return await waiter
        except TimeoutError:
            self._give_back(host, waiter)
            host.saturated += 1
            raise UpstreamSaturated(
                f"no connection within {limits.pending_timeout_s * 1000:g} ms"
            ) from None
        except asyncio.CancelledError:
            self._give_back(host, waiter)
            raise
        finally:
            host.queue_s += loop.time() - started

    def _give_back(self, host: _Host, waiter: asyncio.Future[object]) -> None:
        """A waiter left the queue (timeout, cancellation): pass on what it was given."""
        with contextlib.suppress(ValueError):
            host.waiters.remove(waiter)
        if not waiter.done():
            waiter.cancel()
            return
        if waiter.cancelled() or waiter.exception() is not None:
            return
        got = waiter.result()
        if got is _SLOT:
            host.connecting -= 1
            self._wake(host)
        else:
            assert isinstance(got, UpstreamConnection)
            self._release(got, True)

    def _wake(self, host: _Host) -> None:
        """Give freed connection slots to waiters, in order (the slot is reserved)."""
        waiters = host.waiters
        while waiters and host.connecting + host.open < host.limits.max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                host.connecting += 1
                waiter.set_result(_SLOT)

    async def _connect(
        self, endpoint: Endpoint, host: _Host, connect_timeout: float
    ) -> UpstreamConnection:
        """Open a connection on a slot already counted in ``host.connecting``."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        max_header_bytes = self._max_header_bytes

        def factory() -> UpstreamConnection:
            return UpstreamConnection(endpoint, self, loop, max_header_bytes)

        try:
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
                        _, conn = await loop.create_connection(
                            factory, endpoint.host, endpoint.port
                        )
        finally:
            # Made or not, the connect is over: a made connection counts in `open` now.
            host.connecting -= 1
            self._wake(host)
        if self._closed:
            conn.abort()
            raise RuntimeError("UpstreamPool is closed")
        stats = self.stats
        stats.connections_opened += 1
        host.opened += 1
        by_endpoint = stats.connections_by_endpoint
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + 1
        return conn

    def _connection_made(self, conn: UpstreamConnection) -> None:
        self._conns.add(conn)
        host = self._hosts.get(conn.endpoint)
        if host is not None:
            host.open += 1

    def _connection_lost(self, conn: UpstreamConnection) -> None:
        self._conns.discard(conn)
        host = self._hosts.get(conn.endpoint)
        if host is None:
            return
        host.open -= 1
        if conn in host.idle:
            host.idle.remove(conn)
        self._wake(host)

    def _release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if not reusable or self._closed:
            conn.close()
            return
        host = self._hosts[conn.endpoint]
        if host.open > host.limits.max_connections:
            conn.close()  # the limit was lowered: let the surplus go
            return
        waiters = host.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # straight to the next request: it stays busy
                return
        idle = host.idle
        if len(idle) >= host.max_idle:
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
        for host in self._hosts.values():
            idle = host.idle
            expired = 0
            for conn in idle:  # oldest first
                if conn.idle_since > cutoff:
                    break
                expired += 1
            if expired:
                for conn in idle[:expired]:
                    conn.close()
                del idle[:expired]
            if idle and (oldest is None or idle[0].idle_since < oldest):
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
