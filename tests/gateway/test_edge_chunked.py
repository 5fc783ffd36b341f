"""The strict HTTP/1.1 edge for request bodies: chunked framing (RFC 9112 7.1),
Transfer-Encoding and header-line rules, over raw sockets (a client library would
never send these bytes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, RawResponse, read_response, route

#: Far longer than any answer here takes, far shorter than the body timeout (60 s):
#: a request left waiting for more bytes fails the test.
ANSWER_WITHIN_S = 5

HEAD = b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"


def cfg(backend: EchoBackend) -> dict[str, Any]:
    return {"routers": [route("/x", "/x", [backend], methods=["GET", "POST"])]}


@pytest.fixture
async def gw(backend: EchoBackend, gateway_factory: GatewayFactory) -> RunningGateway:
    return await gateway_factory(cfg(backend))


async def send(port: int, data: bytes) -> tuple[RawResponse, bytes]:
    """Send ``data`` (the client then waits, sending nothing more) and read the answer
    and whatever follows it until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(ANSWER_WITHIN_S):
            resp = await read_response(reader)
            try:
                rest = await reader.read()
            except ConnectionResetError:
                rest = b""  # closed with bytes of ours unread: the kernel resets
        return resp, rest
    finally:
        writer.close()


def bodies(backend: EchoBackend) -> list[bytes]:
    return [request.body for request in backend.requests]


def assert_refused(resp: RawResponse, rest: bytes, status: int = 400) -> None:
    assert resp.status == status
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.json()["status"] == status
    assert resp.header("Connection") == "close"
    assert rest == b""  # closed: nothing after a broken frame is read as a request


# -- what is accepted --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_line",
    [
        b"5;a=b",
        b'5;a="b c"',
        b'5;a="q\\"uoted;x=y"',
        b"5;a;b=c;d",
        b"5 ; a = b",  # BWS around ';' and '=' (RFC 9112 7.1.1)
        b"0005;name=" + b"v" * 1000,
    ],
)
async def test_chunk_extensions_are_accepted_and_ignored(
    gw: RunningGateway, backend: EchoBackend, size_line: bytes
) -> None:
    body = size_line + b"\r\nhello\r\n6;last\r\n world\r\n0;end=1\r\n\r\n"
    resp, _ = await send(
        gw.port, HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body
    )
    assert resp.status == 200
    assert bodies(backend) == [b"hello world"]


async def test_trailers_are_accepted_and_dropped(gw: RunningGateway, backend: EchoBackend) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        head = HEAD.replace(b"\r\n\r\n", b"\r\nTrailer: X-Checksum\r\n\r\n")
        writer.write(head + b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n")
        # The same connection serves the next request: the trailers were read exactly.
        writer.write(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        async with asyncio.timeout(ANSWER_WITHIN_S):
            first = await read_response(reader)
            second = await read_response(reader)
    finally:
        writer.close()
    assert (first.status, second.status) == (200, 200)
    sent = backend.requests[0]
    assert sent.body == b"hello"
    for name in ("X-Checksum", "X-More", "Trailer", "Transfer-Encoding"):
        assert name not in sent.headers  # trailers are never forwarded


async def test_many_small_chunks_arrive_whole(gw: RunningGateway, backend: EchoBackend) -> None:
    body = b"".join(b"1\r\n%c\r\n" % (97 + i % 26) for i in range(3000)) + b"0\r\n\r\n"
    resp, _ = await send(
        gw.port, HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body
    )
    assert resp.status == 200
    assert bodies(backend) == [bytes(97 + i % 26 for i in range(3000))]


# -- chunk-size lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_line",
    [
        b"0x5",
        b"-5",
        b"+5",
        b" 5",
        b"5 ",
        b"5\t",
        b"5z",
        b"",
        b"5;",
        b"5;=b",
        b"5;a=",
        b"5;a=b c",
        b'5;a="unterminated',
        b"5;a=\x01",
        b"5\r",  # CR CR LF
        b"00000000000000005",  # 17 hex digits: overlong, whatever the value
        b"10000000000000005",  # wraps to 5 in a 64-bit parser
    ],
)
async def test_malformed_chunk_size_lines_are_refused(
    gw: RunningGateway, backend: EchoBackend, size_line: bytes
) -> None:
    resp, rest = await send(gw.port, HEAD + size_line + b"\r\nhello\r\n0\r\n\r\n")
    assert_refused(resp, rest)
    assert resp.json()["type"] == "bad_request"
    assert backend.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"5\n",  # chunk-size line
        b"5;a=b\n",
        b"5\r\nhello\n",  # the CRLF after the data
        b"5\r\nhello\r\n0\n",  # the last chunk
        b"0\r\nX-Trailer: 1\n",  # a trailer line
        b"0\r\n\n",  # the final empty line
    ],
)
async def test_a_bare_lf_is_refused_at_once(
    gw: RunningGateway, backend: EchoBackend, body: bytes
) -> None:
    # The client sends nothing after the LF: the answer must not wait for a CR.
    resp, rest = await send(gw.port, HEAD + body)
    assert_refused(resp, rest)
    assert "CRLF" in resp.json()["detail"]
    assert backend.requests == []


async def test_an_oversized_chunk_size_line_is_refused(
    gw: RunningGateway, backend: EchoBackend
) -> None:
    # No LF at all: refused once the line passes the limit, not buffered further.
    resp, rest = await send(gw.port, HEAD + b"5;a=" + b"b" * 10_000)
    assert_refused(resp, rest)
    assert "too long" in resp.json()["detail"]
    resp, rest = await send(gw.port, HEAD + b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n")
    assert_refused(resp, rest)
    assert backend.requests == []


async def test_chunk_extensions_are_bounded_per_request(
    gw: RunningGateway, backend: EchoBackend
) -> None:
    chunk = b"1;pad=" + b"p" * 3000 + b"\r\nx\r\n"
    resp, rest = await send(gw.port, HEAD + chunk * 8 + b"0\r\n\r\n")
    assert_refused(resp, rest)
    assert "extensions" in resp.json()["detail"]
    assert backend.requests == []


# -- trailers ----------------------------------------------------------------------------


async def test_trailers_count_against_the_header_limit(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(backend), max_header_size=8192)
    big = b"X-Pad: " + b"p" * 3000 + b"\r\n"
    resp, rest = await send(gw.port, HEAD + b"5\r\nhello\r\n0\r\n" + big * 3 + b"\r\n")
    assert_refused(resp, rest, 431)
    assert resp.json()["type"] == "request_header_fields_too_large"
    # One endless trailer line: answered once it passes the limit.
    resp, rest = await send(gw.port, HEAD + b"0\r\nX-Pad: " + b"p" * 100_000)
    assert_refused(resp, rest, 431)
    # Within the limit: fine.
    ok, _ = await send(
        gw.port,
        HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        + b"5\r\nhello\r\n0\r\n"
        + big
        + b"\r\n",
    )
    assert ok.status == 200
    assert bodies(backend) == [b"hello"]


@pytest.mark.parametrize(
    "trailer",
    [
        b"X-A: 1\r\n folded",  # obs-fold
        b"X-A : 1",  # whitespace before the colon
        b"no colon",
        b": no name",
        b"X-A: a\x00b",
        b"X-A: a\rb",
    ],
)
async def test_malformed_trailers_are_refused(
    gw: RunningGateway, backend: EchoBackend, trailer: bytes
) -> None:
    resp, rest = await send(gw.port, HEAD + b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n")
    assert_refused(resp, rest)
    assert backend.requests == []


# -- Transfer-Encoding and Content-Length ----------------------------------------------------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: chunked, chunked\r\n", 400),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: chunked, gzip\r\n", 400),  # chunked not last
        (b"Transfer-Encoding: identity\r\n", 400),
        (b"Transfer-Encoding: ,chunked\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),  # a coding not implemented
        (b"Transfer-Encoding: deflate,chunked\r\n", 501),
    ],
)
async def test_ambiguous_or_unsupported_framing_is_refused(
    gw: RunningGateway, backend: EchoBackend, head: bytes, status: int
) -> None:
    request = b"POST /x HTTP/1.1\r\nHost: a.test\r\n" + head + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    resp, rest = await send(gw.port, request)
    assert_refused(resp, rest, status)
    assert backend.requests == []


async def test_transfer_encoding_in_http_1_0_is_refused(
    gw: RunningGateway, backend: EchoBackend
) -> None:
    # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    request = b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    resp, rest = await send(gw.port, request)
    assert_refused(resp, rest)
    assert backend.requests == []


async def test_the_chunked_coding_name_is_case_insensitive(
    gw: RunningGateway, backend: EchoBackend
) -> None:
    request = (
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: Chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    resp, _ = await send(gw.port, request)
    assert resp.status == 200
    assert bodies(backend) == [b"hello"]


@pytest.mark.parametrize(
    "header",
    [
        b"X-A: 1\r\n folded\r\n",  # obs-fold (RFC 9112 5.2)
        b"X-A: 1\r\n\tfolded\r\n",
        b"X-A : 1\r\n",  # whitespace before the colon (RFC 9112 5.1)
        b"X-A\t: 1\r\n",
    ],
)
async def test_obs_fold_and_space_before_colon_are_refused(
    gw: RunningGateway, backend: EchoBackend, header: bytes
) -> None:
    resp, rest = await send(gw.port, b"GET /x HTTP/1.1\r\nHost: a.test\r\n" + header + b"\r\n")
    assert resp.status == 400
    assert rest == b""
    assert backend.requests == []


# -- a broken frame after part of the body has gone upstream ------------------------------


async def test_a_broken_frame_mid_body_never_completes_the_upstream_request(
    gw: RunningGateway, backend: EchoBackend
) -> None:
    big = b"a" * 200_000  # past any read-ahead buffer: streamed upstream as it arrives
    body = b"%x\r\n" % len(big) + big + b"\r\n5\r\nhello\r\nzz\r\n"
    resp, rest = await send(gw.port, HEAD + body)
    assert_refused(resp, rest)
    assert backend.requests == []
