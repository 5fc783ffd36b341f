"""Tests of the pooled upstream HTTP/1.1 client against raw asyncio servers.

Every server writes exact bytes so each framing case is controlled. Every test body runs on
both the default asyncio loop and uvloop (the gateway's loop), bounded by a hard timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme
import uvloop
from kairos_gateway.upstream import (
    Endpoint,
    StaleConnection,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamTLSError,
)

from tests.support import eventually

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
TEST_TIMEOUT = 15.0
T = {"connect_timeout": 2.0, "read_timeout": 2.0}


def on_both_loops(fn: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """Turn an async test body into a test run once per event loop implementation."""

    @pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
    def test(loop_name: str) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(TEST_TIMEOUT):
                await fn()

        with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
            runner.run(bounded())

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    return test


# -- raw server helpers -------------------------------------------------------------------


@dataclass
class Request:
    line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


async def read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = [(k, v) for k, _, v in (line.partition(b": ") for line in lines[1:])]
    req = Request(lines[0], headers, b"", head)
    length = req.header(b"content-length")
    if length:
        req.body = await reader.readexactly(int(length))
    return req


_current_server: contextvars.ContextVar[RawServer] = contextvars.ContextVar("server")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """``asyncio.start_server`` on 127.0.0.1; ``handler(reader, writer, conn_index)``."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.accepted = 0
        self.requests: list[Request] = []
        self.closed_by_client = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._writers:
            w.close()
        await self.server.wait_closed()

    def endpoint(self, **kw: Any) -> Endpoint:
        scheme = "https" if self.ssl_ctx is not None or kw.pop("https", False) else "http"
        return Endpoint(scheme, "127.0.0.1", self.port, **kw)

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        _current_server.set(self)
        index = self.accepted
        self.accepted += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer, index)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # Test teardown; ending normally keeps asyncio.streams (3.11) from logging it.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def canned(respond: Callable[[Request], bytes], *, close_after: bool = False) -> Handler:
    """Handler answering each request with ``respond(req)``; optionally closes after one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        server = _current_server.get()
        while True:
            try:
                req = await read_request(reader)
            except asyncio.IncompleteReadError:
                server.closed_by_client += 1
                return
            server.requests.append(req)
            writer.write(respond(req))
            await writer.drain()
            if close_after:
                return

    return handler


def fixed(data: bytes, **kw: bool) -> Handler:
    return canned(lambda _req: data, **kw)


OK_5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


async def read_all(resp: UpstreamResponse) -> bytes:
    parts = []
    while chunk := await resp.read():
        parts.append(chunk)
    return b"".join(parts)


def hdrs(ep: Endpoint, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Host", ep.host_header), *extra]


async def get(pool: UpstreamPool, ep: Endpoint, target: str = "/", **kw: Any) -> UpstreamResponse:
    method = kw.pop("method", "GET")
    body = kw.pop("body", b"")
    headers = kw.pop("headers", hdrs(ep))
    return await pool.request(ep, method, target, headers, body, **{**T, **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- framing ------------------------------------------------------------------------------


@on_both_loops
async def test_content_length_body() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        assert (resp.status, resp.reason, resp.version) == (200, "OK", "HTTP/1.1")
        assert resp.headers == [("Content-Length", "5")]
        assert await read_all(resp) == b"hello"
        assert resp.complete
        assert await resp.read() == b""
        assert resp.read_nowait() == b""
        await pool.close()


@on_both_loops
async def test_chunked_body_is_decoded_and_connection_reused() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        for _ in range(2):
            resp = await get(pool, srv.endpoint())
            assert ("Content-Encoding", "gzip") in resp.headers  # content coding untouched
            assert await read_all(resp) == b"hello world"
        assert srv.accepted == 1
        await pool.close()


@on_both_loops
async def test_read_until_close_body_not_reused() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with RawServer(fixed(data, close_after=True)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for _ in range(2):
            resp = await get(pool, ep)
            assert await read_all(resp) == b"until the end"
            assert resp.complete
        assert srv.accepted == 2
        assert pool.stats.connections_opened == 2
        assert pool.idle_connections(ep) == 0
        await pool.close()


@on_both_loops
async def test_head_with_content_length_then_reuse() -> None:
    def respond(req: Request) -> bytes:
        if req.line.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        return OK_5

    async with RawServer(canned(respond)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        resp = await get(pool, ep, method="HEAD")
        assert resp.status == 200
        assert resp.complete
        assert resp.read_nowait() == b""
        resp = await get(pool, ep)
        assert await read_all(resp) == b"hello"
        resp = await get(pool, ep, method="HEAD")
        assert await read_all(resp) == b""
        assert srv.accepted == 1
        assert pool.stats.reused == 2
        await pool.close()


@on_both_loops
async def test_head_with_chunked_header_then_reuse() -> None:
    def respond(req: Request) -> bytes:
        if req.line.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        return OK_5

    async with RawServer(canned(respond)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        assert await read_all(await get(pool, ep, method="HEAD")) == b""
        assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 1
        await pool.close()


@on_both_loops
async def test_204_and_304_have_no_body() -> None:
    responses = iter(
        [
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 99\r\n\r\n',
            OK_5,
        ]
    )
    async with RawServer(canned(lambda _r: next(responses))) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        r204 = await get(pool, ep)
        assert r204.status == 204
        assert await read_all(r204) == b""
        r304 = await get(pool, ep)
        assert r304.status == 304
        assert await read_all(r304) == b""
        assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 1
        await pool.close()


@on_both_loops
async def test_interim_responses_are_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        resp = await get(pool, ep, method="POST", body=b"x")
        assert resp.status == 201
        assert resp.headers == [("Content-Length", "2")]
        assert await read_all(resp) == b"ok"
        assert await read_all(await get(pool, ep, method="POST", body=b"x")) == b"ok"
        assert srv.accepted == 1
        await pool.close()


@on_both_loops
async def test_repeated_headers_kept_in_order() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: y\r\nSet-Cookie: b=2\r\n"
        b"set-cookie: c=3; Path=/\r\nContent-Length: 0\r\n\r\n"
    )
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        assert resp.headers == [
            ("Set-Cookie", "a=1"),
            ("X-Other", "y"),
            ("Set-Cookie", "b=2"),
            ("set-cookie", "c=3; Path=/"),
            ("Content-Length", "0"),
        ]
        assert await read_all(resp) == b""
        await pool.close()


@on_both_loops
async def test_latin1_header_and_reason() -> None:
    data = b"HTTP/1.1 418 I'm a t\xe9apot\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        assert resp.reason == "I'm a t\xe9apot"
        assert resp.headers[0] == ("X-Name", "caf\xe9")
        await pool.close()


# -- keep-alive pool ----------------------------------------------------------------------


@on_both_loops
async def test_keep_alive_reuse_100_sequential() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for _ in range(100):
            resp = await get(pool, ep)
            assert await read_all(resp) == b"hello"
        assert srv.accepted == 1
        assert pool.stats.connections_opened == 1
        assert pool.stats.connections_by_endpoint == {ep: 1}
        assert pool.stats.requests_sent == 100
        assert pool.stats.reused == 99
        assert pool.idle_connections(ep) == 1
        await pool.close()


@on_both_loops
async def test_connection_close_response_not_reused() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for _ in range(3):
            assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 3
        assert pool.idle_connections(ep) == 0
        await pool.close()


@on_both_loops
async def test_request_connection_close_not_reused() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for _ in range(2):
            resp = await get(pool, ep, headers=hdrs(ep, ("Connection", "close")))
            assert await read_all(resp) == b"hello"
        assert srv.accepted == 2
        await pool.close()


@on_both_loops
async def test_http10_keep_alive_rules() -> None:
    ka = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    async with RawServer(fixed(ka)) as srv:
        pool = UpstreamPool()
        for _ in range(3):
            resp = await get(pool, srv.endpoint())
            assert resp.version == "HTTP/1.0"
            assert await read_all(resp) == b"hello"
        assert srv.accepted == 1
        await pool.close()
    async with RawServer(fixed(plain)) as srv:
        pool = UpstreamPool()
        for _ in range(3):
            assert await read_all(await get(pool, srv.endpoint())) == b"hello"
        assert srv.accepted == 3
        await pool.close()


@on_both_loops
async def test_server_closed_idle_connection_is_dropped() -> None:
    async with RawServer(fixed(OK_5, close_after=True)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        assert await read_all(await get(pool, ep)) == b"hello"
        # The client sees the FIN while the connection is idle and drops it.
        await eventually(lambda: pool.idle_connections(ep) == 0)
        assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 2
        assert pool.stats.stale == 0
        await pool.close()


def _stale_handler(srv_requests: list[bytes]) -> Handler:
    """First connection answers one request, then drops the next one unanswered (the
    keep-alive race); later connections answer everything."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while True:
            try:
                req = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            srv_requests.append(req.line)
            if index == 0 and len(srv_requests) == 2:
                writer.transport.abort()
                return
            writer.write(OK_5)
            await writer.drain()

    return handler


@on_both_loops
async def test_stale_connection_is_reported_not_replayed() -> None:
    # The pool never replays: the request path decides (and counts) the retry.
    seen: list[bytes] = []
    async with RawServer(_stale_handler(seen)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        assert await read_all(await get(pool, ep)) == b"hello"
        with pytest.raises(StaleConnection) as info:
            await get(pool, ep, "/p", method="POST", body=b"data")
        assert not info.value.response_started
        assert info.value.kind == "stale_connection"
        assert seen == [b"GET / HTTP/1.1", b"POST /p HTTP/1.1"]
        assert pool.stats.stale == 1
        assert srv.accepted == 1
        # A fresh connection is opened for the next request.
        assert await read_all(await get(pool, ep, "/again")) == b"hello"
        assert srv.accepted == 2
        await pool.close()


@on_both_loops
async def test_idle_timeout_expires_connections() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool(idle_timeout_s=0.1)
        ep = srv.endpoint()
        assert await read_all(await get(pool, ep)) == b"hello"
        assert pool.idle_connections(ep) == 1
        await asyncio.sleep(0.3)  # the pool sweep closes it
        assert pool.idle_connections(ep) == 0
        assert srv.closed_by_client == 1
        assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 2
        await pool.close()


@on_both_loops
async def test_max_idle_per_endpoint() -> None:
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            await gate.wait()
            writer.write(OK_5)
            await writer.drain()

    async with RawServer(handler) as srv:
        pool = UpstreamPool(max_idle_per_endpoint=2)
        ep = srv.endpoint()
        tasks = [asyncio.ensure_future(get(pool, ep)) for _ in range(5)]
        await asyncio.sleep(0.1)
        gate.set()
        for resp in await asyncio.gather(*tasks):
            assert await read_all(resp) == b"hello"
        assert srv.accepted == 5
        assert pool.idle_connections(ep) == 2
        await pool.close()


@on_both_loops
async def test_concurrent_requests_use_separate_connections() -> None:
    n = 10
    arrived = 0
    all_arrived = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal arrived
        while True:
            try:
                req = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            arrived += 1
            if arrived == n:
                all_arrived.set()
            await all_arrived.wait()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(req.line), req.line)
            )
            await writer.drain()

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for _round in range(2):
            resps = await asyncio.gather(*(get(pool, ep, f"/{i}") for i in range(n)))
            bodies = [await read_all(r) for r in resps]
            assert bodies == [f"GET /{i} HTTP/1.1".encode() for i in range(n)]
            assert pool.idle_connections(ep) == n
            arrived = 0
            all_arrived.clear()
        assert srv.accepted == n
        assert pool.open_connections == n
        await pool.close()
        assert pool.open_connections == 0


# -- streaming ----------------------------------------------------------------------------


@on_both_loops
async def test_slow_chunked_first_chunk_readable_early() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nrest\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        assert await resp.read() == b"first"
        complete_before_release = resp.complete
        assert not complete_before_release
        assert resp.read_nowait() is None
        release.set()
        assert await resp.read() == b"rest"
        assert await resp.read() == b""
        assert resp.complete
        await pool.close()


@on_both_loops
async def test_large_body_streamed_with_backpressure() -> None:
    size = 24 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB
    written = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal written
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        while written < size:
            writer.write(block)
            written += len(block)
            await writer.drain()
        await reader.read()

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        resp = await get(pool, ep)
        await asyncio.sleep(0.3)  # consumer stalls: the server must get stuck, not the RAM
        assert written < size
        assert resp._buffered <= 2 * 256 * 1024  # high water + at most one read
        total = 0
        first = b""
        while chunk := await resp.read():
            if not first:
                first = chunk
            total += len(chunk)
        assert total == size
        assert first[:256] == bytes(range(256))
        # The connection is healthy afterwards (reading was resumed before reuse).
        assert pool.idle_connections(ep) == 1
        await pool.close()


@on_both_loops
async def test_read_nowait_after_small_response() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        # Headers and body arrived in one segment: no await needed for the body.
        assert resp.complete
        assert resp.read_nowait() == b"hello"
        assert resp.read_nowait() == b""
        await pool.close()


# -- request serialisation ----------------------------------------------------------------


@on_both_loops
async def test_target_sent_byte_for_byte() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        for target in ("/a/%2e%2e/b?x=%20", "/%2F/./x//y?a=b&&c=%zz#frag", "*", "/caf\xe9"):
            await read_all(
                await get(pool, ep, target, method="OPTIONS" if target == "*" else "GET")
            )
        lines = [r.line for r in srv.requests]
        assert lines == [
            b"GET /a/%2e%2e/b?x=%20 HTTP/1.1",
            b"GET /%2F/./x//y?a=b&&c=%zz#frag HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"GET /caf\xe9 HTTP/1.1",
        ]
        await pool.close()


@on_both_loops
async def test_request_head_and_body_framing() -> None:
    async with RawServer(fixed(OK_5)) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        await read_all(await get(pool, ep, "/p", method="POST", body=b"payload"))
        await read_all(await get(pool, ep, "/e", method="POST"))
        await read_all(await get(pool, ep, "/g"))
        smuggle = hdrs(
            ep, ("Content-Length", "999"), ("Transfer-Encoding", "chunked"), ("X-A", "1")
        )
        await read_all(await get(pool, ep, "/s", method="PUT", body=b"abc", headers=smuggle))
        post, empty, plain, put = srv.requests
        assert post.raw_head == (
            b"POST /p HTTP/1.1\r\nHost: %s\r\nContent-Length: 7\r\n\r\n" % ep.host_header.encode()
        )
        assert post.body == b"payload"
        assert empty.header(b"content-length") == b"0"
        assert plain.header(b"content-length") is None
        assert plain.header(b"transfer-encoding") is None
        assert put.headers == [
            (b"Host", ep.host_header.encode()),
            (b"X-A", b"1"),
            (b"Content-Length", b"3"),
        ]
        assert put.body == b"abc"
        assert srv.accepted == 1
        await pool.close()


@pytest.mark.parametrize(
    ("target", "headers", "method"),
    [
        ("/a b", [], "GET"),
        ("/a\r\nX-Evil: 1", [], "GET"),
        ("/a\nb", [], "GET"),
        ("/a\0", [], "GET"),
        ("", [], "GET"),
        ("/", [("X-A", "v\r\nX-Evil: 1")], "GET"),
        ("/", [("X-A", "v\nX-Evil: 1")], "GET"),
        ("/", [("X-A", "v\rX")], "GET"),
        ("/", [("X-A", "v\0")], "GET"),
        ("/", [("X-A\r\nX-Evil", "1")], "GET"),
        ("/", [("X-A: b", "1")], "GET"),
        ("/", [("X A", "1")], "GET"),
        ("/", [("", "1")], "GET"),
        ("/", [("X-A", "\u20ac")], "GET"),
        ("/", [], "GET /x HTTP/1.1\r\n"),
        ("/", [], "G T"),
    ],
)
def test_injection_rejected_before_anything_is_sent(
    target: str, headers: list[tuple[str, str]], method: str
) -> None:
    async def body() -> None:
        async with RawServer(fixed(OK_5)) as srv:
            pool = UpstreamPool()
            with pytest.raises(ValueError, match=r"invalid|latin-1"):
                await pool.request(
                    srv.endpoint(),
                    method,
                    target,
                    [("Host", "h"), *headers],
                    connect_timeout=1.0,
                    read_timeout=1.0,
                )
            assert srv.accepted == 0
            await pool.close()

    asyncio.run(body())


# -- errors -------------------------------------------------------------------------------


@on_both_loops
async def test_read_timeout_waiting_for_headers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await reader.read()

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, srv.endpoint(), read_timeout=0.2)
        elapsed = time.monotonic() - start
        assert 0.15 <= elapsed < 0.3
        assert info.value.phase == "read"
        assert info.value.kind == "timeout"
        assert not info.value.response_started
        await eventually(lambda: pool.open_connections == 0)
        await pool.close()


@on_both_loops
async def test_read_timeout_is_inactivity_not_total() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in total, never silent for 0.25 s
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
        writer.write(b"0\r\n\r\n")
        # Then stall mid-second-response to check the body timeout.
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await reader.read()

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        resp = await get(pool, ep, read_timeout=0.25)
        assert await read_all(resp) == b"x" * 6
        resp = await get(pool, ep, read_timeout=0.25)
        assert await resp.read() == b"abc"
        with pytest.raises(UpstreamTimeout) as info:
            await resp.read()
        assert info.value.phase == "read"
        assert info.value.response_started
        await pool.close()


@on_both_loops
async def test_connect_refused() -> None:
    pool = UpstreamPool()
    with pytest.raises(UpstreamConnectError) as info:
        await get(pool, Endpoint("http", "127.0.0.1", free_port()))
    assert info.value.kind == "connect"
    assert isinstance(info.value.__cause__, OSError)
    await pool.close()


@on_both_loops
async def test_connect_timeout_during_tls_handshake() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await reader.read()  # accepts TCP, never answers the ClientHello

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, srv.endpoint(https=True), connect_timeout=0.2)
        assert time.monotonic() - start < 0.5
        assert info.value.phase == "connect"
        await pool.close()


@on_both_loops
async def test_garbage_response_is_protocol_error() -> None:
    async with RawServer(fixed(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as srv:
        pool = UpstreamPool()
        with pytest.raises(UpstreamProtocolError) as info:
            await get(pool, srv.endpoint())
        assert info.value.kind == "protocol"
        assert not info.value.response_started
        await pool.close()


@on_both_loops
async def test_invalid_chunk_is_protocol_error_after_headers() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        with pytest.raises(UpstreamProtocolError) as info:
            await read_all(resp)
        assert info.value.response_started
        await eventually(lambda: pool.open_connections == 0)
        await pool.close()


@on_both_loops
async def test_switching_protocols_is_protocol_error() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    async with RawServer(fixed(data)) as srv:
        pool = UpstreamPool()
        with pytest.raises(UpstreamProtocolError):
            await get(pool, srv.endpoint())
        await pool.close()


@on_both_loops
async def test_unsolicited_bytes_after_response_drop_connection() -> None:
    async with RawServer(fixed(OK_5 + b"EXTRA")) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        assert await read_all(await get(pool, ep)) == b"hello"
        assert await read_all(await get(pool, ep)) == b"hello"
        assert srv.accepted == 2
        await pool.close()


@on_both_loops
async def test_peer_closes_mid_body() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    async with RawServer(fixed(data, close_after=True)) as srv:
        pool = UpstreamPool()
        resp = await get(pool, srv.endpoint())
        with pytest.raises(UpstreamClosed) as info:
            await read_all(resp)
        assert info.value.response_started
        assert info.value.kind == "reset"
        assert not resp.complete
        await pool.close()


@on_both_loops
async def test_peer_closes_before_headers_on_fresh_connection() -> None:
    async with RawServer(fixed(b"HTTP/1.1 200 O", close_after=True)) as srv:
        pool = UpstreamPool()
        with pytest.raises(UpstreamClosed) as info:
            await get(pool, srv.endpoint())
        assert not info.value.response_started
        assert pool.stats.stale == 0
        await pool.close()


@on_both_loops
async def test_oversized_header_block() -> None:
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(50))
    one_huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 200_000
    for data in (many + b"Content-Length: 0\r\n\r\n", one_huge):
        async with RawServer(fixed(data)) as srv:
            pool = UpstreamPool(max_header_bytes=4096)
            with pytest.raises(UpstreamProtocolError, match="exceeds"):
                await get(pool, srv.endpoint())
            await pool.close()
    async with RawServer(fixed(many + b"Content-Length: 0\r\n\r\n")) as srv:
        pool = UpstreamPool(max_header_bytes=8192)
        assert (await get(pool, srv.endpoint())).status == 200
        await pool.close()


# -- cancellation and shutdown ------------------------------------------------------------


@on_both_loops
async def test_abort_closes_connection() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        server = _current_server.get()
        await read_request(reader)
        writer.write(data)
        await writer.drain()
        assert await reader.read() == b""
        server.closed_by_client += 1

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        resp = await get(pool, ep)
        assert await resp.read() == b"some"
        resp.abort()
        resp.abort()
        with pytest.raises(UpstreamClosed):
            await resp.read()
        await eventually(lambda: srv.closed_by_client == 1)
        assert pool.open_connections == 0
        assert pool.idle_connections(ep) == 0
        await pool.close()


@on_both_loops
async def test_cancelled_request_closes_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        server = _current_server.get()
        await read_request(reader)
        assert await reader.read() == b""
        server.closed_by_client += 1

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        task = asyncio.ensure_future(get(pool, srv.endpoint()))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: srv.closed_by_client == 1)
        assert pool.open_connections == 0
        await pool.close()


@on_both_loops
async def test_pool_close_closes_idle_and_aborts_active() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        server = _current_server.get()
        while True:
            try:
                req = await read_request(reader)
            except asyncio.IncompleteReadError:
                server.closed_by_client += 1
                return
            if req.line.startswith(b"GET /hang"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            elif req.line.startswith(b"GET /never"):
                pass
            else:
                writer.write(OK_5)

    async with RawServer(handler) as srv:
        pool = UpstreamPool()
        ep = srv.endpoint()
        other = Endpoint("http", "localhost", srv.port)
        assert await read_all(await get(pool, other)) == b"hello"  # idle connection
        streaming = await get(pool, ep, "/hang")
        assert await streaming.read() == b"ab"
        waiting = asyncio.ensure_future(get(pool, ep, "/never"))
        await asyncio.sleep(0.05)
        assert pool.open_connections == 3
        await pool.close()
        await pool.close()
        assert pool.open_connections == 0
        with pytest.raises(UpstreamClosed):
            await streaming.read()
        with pytest.raises(UpstreamClosed):
            await waiting
        with pytest.raises(RuntimeError):
            await get(pool, ep)
        await eventually(lambda: srv.closed_by_client == 3)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.mark.parametrize("loop_name", list(LOOP_FACTORIES))
def test_tls_verification_modes(tls_ca: trustme.CA, tmp_path: Any, loop_name: str) -> None:
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))

    async def body() -> None:
        async with RawServer(fixed(OK_5), ssl_ctx=tls_server_context(tls_ca)) as srv:
            pool = UpstreamPool()
            with pytest.raises(UpstreamTLSError) as info:
                await get(pool, srv.endpoint())
            assert info.value.kind == "tls"
            assert isinstance(info.value, UpstreamConnectError)
            assert isinstance(info.value.__cause__, ssl.SSLError)

            trusted = srv.endpoint(tls_ca_file=str(ca_file))
            for _ in range(3):
                assert await read_all(await get(pool, trusted)) == b"hello"
            assert pool.stats.connections_by_endpoint[trusted] == 1

            # Hostname is checked too: the cert is for 127.0.0.1/localhost only.
            wrong_name = Endpoint("https", "127.0.0.2", srv.port, tls_ca_file=str(ca_file))
            with pytest.raises(UpstreamError):
                await get(pool, wrong_name)

            insecure = srv.endpoint(tls_verify=False)
            assert await read_all(await get(pool, insecure)) == b"hello"
            await pool.close()

            pool = UpstreamPool()
            with pytest.raises(UpstreamTLSError):
                await get(pool, srv.endpoint(tls_ca_file=str(tmp_path / "missing.pem")))
            await pool.close()

        # Read-until-close framing over TLS: the EOF ends the body.
        until_close = b"HTTP/1.1 200 OK\r\n\r\nsecret body"
        server_ctx = tls_server_context(tls_ca)
        async with RawServer(fixed(until_close, close_after=True), ssl_ctx=server_ctx) as srv:
            pool = UpstreamPool()
            for _ in range(2):
                resp = await get(pool, srv.endpoint(tls_ca_file=str(ca_file)))
                assert await read_all(resp) == b"secret body"
            assert srv.accepted == 2
            await pool.close()

    with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
        runner.run(asyncio.wait_for(body(), TEST_TIMEOUT))


# -- Endpoint -----------------------------------------------------------------------------


def test_endpoint_host_header_and_label() -> None:
    assert Endpoint("http", "example.com", 80).host_header == "example.com"
    assert Endpoint("https", "example.com", 443).host_header == "example.com"
    assert Endpoint("http", "example.com", 8080).host_header == "example.com:8080"
    v6 = Endpoint("https", "::1", 8443)
    assert v6.host_header == "[::1]:8443"
    assert v6.label == "https://[::1]:8443"
    assert Endpoint("http", "10.0.0.1", 80).label == "http://10.0.0.1:80"
    assert Endpoint("http", "h", 1) == Endpoint("http", "h", 1)
    assert len({Endpoint("http", "h", 1), Endpoint("http", "h", 1), Endpoint("https", "h", 1)}) == 2
    for bad in (("ftp", "h", 1), ("http", "", 1), ("http", "h", 0), ("http", "a/b", 1)):
        with pytest.raises(ValueError, match=r"invalid|unsupported"):
            Endpoint(*bad)
