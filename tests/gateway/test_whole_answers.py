"""The gateway's own whole answers (problems, cache hits, 304s) on the wire, read off
raw sockets: framing, keep-alive in HTTP/1.1 and HTTP/1.0, ``Connection: close``,
HEAD, and header names as Tornado writes them (`StrictHTTP1Connection.write_whole`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kairos_gateway.http1 import StrictHTTP1Connection
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders, RequestStartLine
from tornado.iostream import IOStream
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, RawResponse, read_response, route

TIMEOUT_S = 5


def cfg(backend: EchoBackend | str) -> dict[str, Any]:
    cached = route("/c/{id}", "/c/{id}", [backend], methods=["GET", "HEAD"])
    cached["plugins"] = [
        {"name": "cache", "config": {"default_ttl_s": 60, "max_object_bytes": 16 << 20}}
    ]
    return {"routers": [cached]}


@pytest.fixture
async def gw(backend: EchoBackend, gateway_factory: GatewayFactory) -> RunningGateway:
    return await gateway_factory(cfg(backend))


class Connection:
    """One client connection: requests written as given, answers read in turn."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def ask(self, head: str, *, is_head: bool = False) -> RawResponse:
        self.writer.write(head.encode("latin-1"))
        await self.writer.drain()
        async with asyncio.timeout(TIMEOUT_S):
            return await read_response(self.reader, head=is_head)

    async def closed(self) -> bool:
        """Whether the gateway closed the connection (no byte follows)."""
        async with asyncio.timeout(TIMEOUT_S):
            try:
                return await self.reader.read(1) == b""
            except ConnectionResetError:
                return True


@pytest.fixture
async def client(gw: RunningGateway) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        yield Connection(reader, writer)
    finally:
        writer.close()


def get(target: str, *extra: str, method: str = "GET", version: str = "1.1") -> str:
    return "\r\n".join([f"{method} {target} HTTP/{version}", "Host: a.test", *extra, "", ""])


async def test_answers_of_the_gateway_keep_the_connection_and_are_framed_exactly(
    client: Connection, backend: EchoBackend
) -> None:
    missing = await client.ask(get("/nowhere"))
    assert missing.status == 404
    assert missing.header("Content-Length") == str(len(missing.body))
    assert missing.json()["status"] == 404
    head = await client.ask(get("/nowhere", method="HEAD"), is_head=True)
    assert head.status == 404
    assert head.header("Content-Length") == missing.header("Content-Length")
    miss = await client.ask(get("/c/1"))
    hit = await client.ask(get("/c/1"))
    assert (miss.header("X-Cache"), hit.header("X-Cache")) == ("MISS", "HIT")
    assert hit.body == miss.body
    assert hit.header("Content-Length") == str(len(hit.body))
    # Names in canonical case, each header once.
    names = [name for name, _ in hit.headers]
    assert {"X-Cache", "Age", "X-Request-Id", "Content-Length", "Content-Type"} <= set(names)
    assert names.count("Content-Length") == 1
    assert hit.header("Connection") is None
    etag = miss.header("Etag")
    assert etag
    # A 304 from the cache has no content and no Content-Length (RFC 9110 8.6).
    not_modified = await client.ask(get("/c/1", f"If-None-Match: {etag}"))
    assert not_modified.status == 304
    assert not_modified.header("Content-Length") is None
    assert not_modified.header("Etag") == etag
    head_hit = await client.ask(get("/c/1", method="HEAD"), is_head=True)
    assert head_hit.status == 200
    assert head_hit.header("Content-Length") == str(len(hit.body))
    # Every answer above came off one connection, in order, with nothing left over.
    last = await client.ask(get("/nowhere"))
    assert last.status == 404
    assert len(backend.requests) == 1


class _Big(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "max-age=60")
        self.write(BIG)


#: More than one send() on loopback takes at once: the rest of a hit goes out queued.
BIG = bytes(range(97, 123)) * (8 * 1024 * 1024 // 26)


async def test_a_hit_larger_than_the_socket_takes_at_once_arrives_whole(
    gateway_factory: GatewayFactory,
) -> None:
    sock, port = bind_unused_port()
    server = HTTPServer(web.Application([(r"/c/big", _Big)]))
    server.add_sockets([sock])
    try:
        gw = await gateway_factory(cfg(f"http://127.0.0.1:{port}"))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        client = Connection(reader, writer)
        try:
            miss = await client.ask(get("/c/big"))
            # The gateway runs on this event loop: its send() of the hit happens while
            # nothing here reads, so the socket takes only part of it.
            writer.write(get("/c/big").encode())
            await writer.drain()
            hit = await read_response(reader)
            assert (miss.header("X-Cache"), hit.header("X-Cache")) == ("MISS", "HIT")
            assert miss.body == hit.body == BIG
            after = await client.ask(get("/nowhere"))
            assert after.status == 404  # the connection goes on after the queued bytes
        finally:
            writer.close()
    finally:
        server.stop()


async def test_a_client_asking_to_close_gets_connection_close_once(client: Connection) -> None:
    answer = await client.ask(get("/nowhere", "Connection: close"))
    assert answer.status == 404
    assert answer.header_all("Connection") == ["close"]
    assert await client.closed()


async def test_http10_keep_alive_is_answered_and_kept(client: Connection) -> None:
    first = await client.ask(get("/c/2", "Connection: keep-alive", version="1.0"))
    second = await client.ask(get("/c/2", "Connection: keep-alive", version="1.0"))
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert second.header_all("Connection") == ["Keep-Alive"]
    plain = await client.ask(get("/nowhere", version="1.0"))
    assert plain.status == 404
    assert plain.header("Connection") is None
    assert await client.closed()  # HTTP/1.0 without keep-alive: closed after the answer


async def test_an_answer_before_the_body_closes_the_connection(client: Connection) -> None:
    # A body over the management API's limit: the 413 goes out at once and the
    # connection closes rather than read a body nobody wants.
    head = get("/api/routes", "Content-Length: 1000000000", method="POST")
    answer = await client.ask(head)
    assert answer.status == 413
    assert answer.header_all("Connection") == ["close"]
    assert await client.closed()


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ([("X-Note", "a\r\nInjected: 1")], "OK"),
        ([("X-Note", "a\nInjected: 1")], "OK"),
        ([("X-Note\r", "a")], "OK"),
        ([("X-Note", "a")], "OK\r\nInjected: 1"),
    ],
)
async def test_a_cr_or_lf_in_the_head_is_refused_before_anything_is_written(
    pairs: list[tuple[str, str]], reason: str
) -> None:
    ours, theirs = socket.socketpair()
    stream = IOStream(ours)
    try:
        conn = StrictHTTP1Connection(stream, False)
        conn._request_start_line = RequestStartLine("GET", "/", "HTTP/1.1")
        conn._request_headers = HTTPHeaders()
        with pytest.raises(ValueError, match="Illegal characters"):
            conn.write_whole(200, reason, pairs, b"body")
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1)  # nothing reached the client
    finally:
        stream.close()
        theirs.close()
