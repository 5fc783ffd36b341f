"""The strict HTTP/1.1 edge: request heads and chunked bodies (RFC 9112).

Tornado parses requests; this module refuses what it would let through, or answer
late, and that a backend or a proxy in front of the gateway could read differently
(request smuggling):

- `head_problem`: the request line and headers together over the header limit (414,
  431), Host (exactly one, a host[:port]), and the body's framing: Transfer-Encoding
  with Content-Length, in an HTTP/1.0 request, or anything but a single ``chunked``
  as the final coding (400; a well-formed coding the gateway does not implement, such
  as ``gzip, chunked``: 501). The exchange answers these before anything else.
- `StrictHTTP1Connection` reads a chunked body by RFC 9112 7.1 rather than Tornado's
  looser reader: chunk extensions (``5;a=b``, ``5;a="b c"``) are accepted and ignored;
  a chunk-size line must be 1 to 16 hex digits, optional extensions and CRLF, at most
  `CHUNK_LINE_LIMIT` bytes (no ``0x``, sign, space or other junk); a bare LF ends the
  request at once (400) instead of leaving it waiting for a CR until the body timeout;
  a trailer section is accepted, checked as header lines, counted against the header
  limit (431 past it) and dropped: trailers are never forwarded.

A refusal in the middle of a body goes to the delegate's ``refuse_body(error)`` (the
exchange answers a problem, or cuts the connection if its response has begun); the
connection then closes, since nothing after a broken frame can be trusted as the
start of the next request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, Protocol

from kairos_core import BadRequest, HeadersTooLarge, KairosError, UriTooLong
from tornado import httputil, iostream
from tornado.concurrent import future_add_done_callback
from tornado.http1connection import (
    HTTP1Connection,
    HTTP1ConnectionParameters,
    HTTP1ServerConnection,
)
from tornado.httputil import _normalize_header
from tornado.log import app_log, gen_log

__all__ = [
    "CHUNK_EXTENSIONS_LIMIT",
    "CHUNK_LINE_LIMIT",
    "StrictHTTP1Connection",
    "StrictServerConnection",
    "UnsupportedTransferCoding",
    "head_problem",
    "header_bytes",
]

#: Longest chunk-size line (hex size, extensions, CRLF).
CHUNK_LINE_LIMIT = 4096
#: Chunk-extension bytes allowed in one request body, all chunks together (extensions
#: carry nothing the gateway uses, and do not count as body bytes).
CHUNK_EXTENSIONS_LIMIT = 16 * 1024

#: Tornado yields to the event loop after this much work, chunk lines counted at 1 KiB.
_YIELD_THRESHOLD = 256 * 1024
_CHUNK_COST = 1024

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_BWS = rb"[ \t]*"
#: RFC 9112 7.1: chunk-size [chunk-ext] CRLF; chunk-ext = *(BWS ";" BWS name [BWS "=" BWS value]).
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:"
    + _BWS
    + rb";"
    + _BWS
    + _TOKEN
    + rb"(?:"
    + _BWS
    + rb"="
    + _BWS
    + rb"(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED
    + rb"))?)*)\r\n"
)
#: A line of at most ``n`` bytes before its LF, or ``n + 1`` bytes with no LF: the
#: read ends either way, so an overlong line is answered rather than buffered.
_LINE = rb"\A[^\n]{0,%d}\n|\A[^\n]{%d}"
_CHUNK_LINE_READ = _LINE % (CHUNK_LINE_LIMIT - 1, CHUNK_LINE_LIMIT)

_Reader = Callable[[Awaitable[bytes]], Awaitable[bytes]]

#: RFC 9110 host [":" port]: a bracketed IP literal, or a reg-name / IPv4 address.
_HOST_VALUE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?")


class UnsupportedTransferCoding(KairosError):
    """A request body in a transfer coding the gateway does not decode (RFC 9112 6.1)."""

    status = 501
    type = "unsupported_transfer_coding"
    title = "Transfer coding not implemented"


def header_bytes(headers: httputil.HTTPHeaders) -> int:
    """Size of the header block as received, near enough (names, values, separators)."""
    return sum(len(name) + len(value) + 4 for name, value in headers.get_all())


def head_problem(
    version: str, target: str, headers: httputil.HTTPHeaders, limit: int
) -> KairosError | None:
    """Why the request line and headers are refused before anything else, or None.

    The request line and the header block share one size limit (414 when the target
    alone is over it, else 431), as Envoy's `max_request_headers_kb` does. An HTTP/1.1
    request needs exactly one ``Host`` and it must be a host[:port] (RFC 9112 3.2).
    A body's framing must be unambiguous (see `framing_problem`).
    """
    if len(target) > limit:
        return UriTooLong(f"the request target is longer than {limit} bytes")
    if len(target) + header_bytes(headers) > limit:
        return HeadersTooLarge("the request line and headers are too large")
    hosts = headers.get_list("Host")
    if len(hosts) != 1:
        if hosts or version == "HTTP/1.1":
            detail = "several Host headers" if hosts else "no Host header"
            return BadRequest(f"the request has {detail}; it needs exactly one")
    elif _HOST_VALUE.fullmatch(hosts[0]) is None:
        return BadRequest("the Host header is not a valid host[:port]")
    if "Transfer-Encoding" in headers:
        return framing_problem(version, headers)
    return None


def framing_problem(version: str, headers: httputil.HTTPHeaders) -> KairosError | None:
    """Why a request with ``Transfer-Encoding`` cannot be framed safely, or None.

    RFC 9112 6.1 and 6.3: with Content-Length too, or in HTTP/1.0, the framing is
    faulty (400); ``chunked`` must be the final coding, applied once (400); any other
    coding before it is not implemented here (501). Only a single ``chunked`` passes.
    """
    if "Content-Length" in headers:
        return BadRequest("the request has both Transfer-Encoding and Content-Length")
    if version != "HTTP/1.1":
        return BadRequest(f"Transfer-Encoding is not allowed in an {version} request")
    codings = [
        coding.strip(" \t").lower()
        for value in headers.get_list("Transfer-Encoding")
        for coding in value.split(",")
    ]
    if codings == ["chunked"]:
        return None
    if "" in codings or codings[-1] != "chunked" or codings.count("chunked") > 1:
        return BadRequest("Transfer-Encoding must end in chunked, applied once")
    return UnsupportedTransferCoding(
        f"transfer codings other than chunked are not implemented: {', '.join(codings[:-1])}"
    )


class BodyRefuser(Protocol):
    """A request delegate that can answer a broken body itself."""

    def refuse_body(self, error: KairosError) -> None: ...


class _Refused(Exception):
    def __init__(self, error: KairosError) -> None:
        super().__init__(error.detail)
        self.error = error


class StrictHTTP1Connection(HTTP1Connection):
    """`HTTP1Connection` with the strict chunked reader (see the module docstring).

    ``header_limit`` is the gateway's limit for the request line and headers, which
    the trailer section counts against.
    """

    header_limit = 64 * 1024

    def write_whole(
        self, status: int, reason: str, pairs: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        """Write a whole response, head and ``body``, and finish it: what
        `write_headers` and `finish` do for a response whose framing the caller gave
        (``Content-Length``, or none for a status without content), without building
        an `HTTPHeaders` or the futures nobody waits for. ``body`` is sent as given
        (empty for HEAD). Names are written in Tornado's canonical case, as
        `write_headers` does; a CR or LF in a name, value or reason is refused with
        the same `ValueError`.

        A response for the gateway's own answers (problems, cache hits, the
        management API): `write_headers` checked and copied every header line of it,
        a third of the CPU of a cache hit (docs/benchmarks.md).
        """
        start = self._request_start_line
        assert start is not None
        if start.version == "HTTP/1.1":
            if self._disconnect_on_finish:
                pairs = [*_without(pairs, "connection"), ("Connection", "close")]
        else:
            request_headers = self._request_headers
            assert request_headers is not None
            if request_headers.get("Connection", "").lower() == "keep-alive":
                pairs = [*_without(pairs, "connection"), ("Connection", "Keep-Alive")]
        self._response_start_line = httputil.ResponseStartLine("HTTP/1.1", status, reason)
        self._chunking_output = False
        self._expected_content_remaining = 0
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{_normalize_header(name)}: {value}" for name, value in pairs]
        head = "\r\n".join(lines)
        separators = len(lines) - 1
        if head.count("\n") != separators or head.count("\r") != separators:
            raise ValueError(f"Illegal characters (CR or LF) in header: {head!r}")
        self._write_finished = True
        if not self._read_finished:
            # As `finish`: the rest of the request is not read; the connection closes.
            self._disconnect_on_finish = True
        stream = self.stream
        if stream.closed():
            self._finish_request(None)
            return
        stream.set_nodelay(True)
        data = head.encode("latin1") + b"\r\n\r\n" + body
        if stream.__class__ is iostream.IOStream and not stream._write_buffer:
            # Nothing queued before it (plain TCP): try the socket at once, as
            # `IOStream.write` would, without its future and buffer bookkeeping.
            try:
                sent = stream.socket.send(data)
            except OSError:  # full (BlockingIOError) or broken: `write` tries and handles it
                sent = 0
            if sent == len(data):
                self._finish_request(None)
                return
            data = data[sent:]
        self._pending_write = written = stream.write(data)
        future_add_done_callback(written, self._finish_request)

    def _read_body(
        self,
        code: int,
        headers: httputil.HTTPHeaders,
        delegate: httputil.HTTPMessageDelegate,
    ) -> Awaitable[None] | None:
        if self._write_finished and "Transfer-Encoding" in headers:
            start = self._request_start_line
            if start is not None and framing_problem(start.version, headers) is not None:
                # Refused already (see head_problem): no body can be read off a faulty
                # frame; the connection closes once the answer is out.
                return None
        return super()._read_body(code, headers, delegate)

    async def _read_chunked_body(self, delegate: httputil.HTTPMessageDelegate) -> None:
        try:
            await self._read_chunks(delegate)
        except _Refused as refused:
            self._refuse(delegate, refused.error)

    async def _read_chunks(self, delegate: httputil.HTTPMessageDelegate) -> None:
        # Tornado's reader with the framing checked strictly: the delivery of the data
        # (consecutive small chunks coalesced up to chunk_size, flushed before any wait
        # for the network, an awaitable from data_received awaited), the max_body_size
        # accounting and the yields to the event loop are as in
        # HTTP1Connection._read_chunked_body.
        stream = self.stream
        chunk_size = self.params.chunk_size
        total_size = 0
        extensions = 0
        pending = bytearray()
        work = 0

        def read(future: Awaitable[bytes]) -> Awaitable[bytes]:
            if pending and not _is_done(future):
                return flush_and_read(future)
            return future

        async def flush_and_read(future: Awaitable[bytes]) -> bytes:
            data = bytes(pending)
            pending.clear()
            await self._deliver_body(delegate, data)
            return await future

        while True:
            work += _CHUNK_COST
            if work >= _YIELD_THRESHOLD:
                work = 0
                await asyncio.sleep(0)
            line = await read(stream.read_until_regex(_CHUNK_LINE_READ))
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                _bad_chunk_line(line)
            extensions += len(match.group(2))
            if extensions > CHUNK_EXTENSIONS_LIMIT:
                raise _Refused(BadRequest("the chunk extensions are too large"))
            chunk_len = int(match.group(1), 16)
            if chunk_len == 0:
                await self._read_trailers(read)
                if pending:
                    await self._deliver_body(delegate, bytes(pending))
                return
            total_size += chunk_len
            if total_size > self._max_body_size:
                raise httputil.HTTPInputError("chunked body too large")
            bytes_to_read = chunk_len
            while bytes_to_read:
                chunk = await read(stream.read_bytes(min(bytes_to_read, chunk_size), partial=True))
                bytes_to_read -= len(chunk)
                if not pending and len(chunk) == chunk_size:
                    await self._deliver_body(delegate, chunk)
                else:
                    pending += chunk
                    if len(pending) >= chunk_size:
                        data = bytes(pending[:chunk_size])
                        del pending[:chunk_size]
                        await self._deliver_body(delegate, data)
                work += len(chunk)
                if work >= _YIELD_THRESHOLD:
                    work = 0
                    await asyncio.sleep(0)
            # The chunk's CRLF: a lone LF is refused as soon as it arrives.
            end = await read(stream.read_bytes(2, partial=True))
            if end == b"\r":
                end += await read(stream.read_bytes(1))
            if end != b"\r\n":
                raise _Refused(BadRequest("a chunk does not end in CRLF"))

    async def _read_trailers(self, read: _Reader) -> None:
        """Read the trailer section up to its empty line; check it and drop it."""
        start = self._request_start_line
        headers = self._request_headers
        assert start is not None
        assert headers is not None
        limit = self.header_limit
        budget = limit - len(start.path) - header_bytes(headers)
        # One pattern per limit (compiled once): a line without LF ends the read at
        # ``limit`` bytes, which is over the budget.
        pattern = _LINE % (limit - 1, limit)
        while True:
            line = await read(self.stream.read_until_regex(pattern))
            budget -= len(line)
            if budget < 0:
                raise _Refused(HeadersTooLarge("the trailer section is too large"))
            if line == b"\r\n":
                return
            if not line.endswith(b"\r\n"):
                raise _Refused(BadRequest("a trailer line does not end in CRLF"))
            try:
                # Tornado's header-line rules: a token name right before the colon, no
                # obs-fold, no control characters (CR included) in the value.
                httputil.HTTPHeaders().parse_line(line[:-2].decode("latin-1"))
            except httputil.HTTPInputError:
                raise _Refused(BadRequest("a trailer line is malformed")) from None

    def _refuse(self, delegate: httputil.HTTPMessageDelegate, error: KairosError) -> None:
        """End a request whose body broke ``error``'s rule: the delegate answers (see
        `BodyRefuser`), or Tornado's plain 400 goes out if nothing has been written."""
        gen_log.info("Malformed request body from %s: %s", self.context, error.detail)
        if not self._write_finished:
            refuse = getattr(delegate, "refuse_body", None)
            if refuse is not None:
                try:
                    refuse(error)
                except Exception:
                    app_log.exception("refuse_body failed")
        if self._write_finished:
            return  # answered: finish() has marked the connection to close after it
        if self._response_start_line is None and not self.stream.closed():
            raise httputil.HTTPInputError(error.detail)
        # A response has begun (or the stream is gone): the connection is cut.
        self.close()
        raise iostream.StreamClosedError()


def _without(pairs: Sequence[tuple[str, str]], lower_name: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in pairs if name.lower() != lower_name]


def _is_done(future: Awaitable[bytes]) -> bool:
    return isinstance(future, asyncio.Future) and future.done()


def _bad_chunk_line(line: bytes) -> NoReturn:
    if not line.endswith(b"\n"):
        raise _Refused(BadRequest("the chunk-size line is too long"))
    if not line.endswith(b"\r\n"):
        raise _Refused(BadRequest("a chunk-size line does not end in CRLF"))
    raise _Refused(BadRequest("the chunk-size line is malformed"))


class StrictServerConnection(HTTP1ServerConnection):
    """`HTTP1ServerConnection` whose requests are read by `StrictHTTP1Connection`."""

    def __init__(
        self,
        stream: iostream.IOStream,
        params: HTTP1ConnectionParameters,
        context: object,
        *,
        header_limit: int,
    ) -> None:
        super().__init__(stream, params, context)
        self.header_limit = header_limit

    async def _server_request_loop(self, delegate: httputil.HTTPServerConnectionDelegate) -> None:
        # Tornado's loop, with the strict connection class.
        try:
            while True:
                conn = StrictHTTP1Connection(self.stream, False, self.params, self.context)
                conn.header_limit = self.header_limit
                request_delegate = delegate.start_request(self, conn)
                try:
                    ret = await conn.read_response(request_delegate)
                except (
                    iostream.StreamClosedError,
                    iostream.UnsatisfiableReadError,
                    asyncio.CancelledError,
                ):
                    return
                except Exception:
                    gen_log.error("Uncaught exception", exc_info=True)
                    conn.close()
                    return
                if not ret:
                    return
                await asyncio.sleep(0)
        finally:
            delegate.on_close(self)
