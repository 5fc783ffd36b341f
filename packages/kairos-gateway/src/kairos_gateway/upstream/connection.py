"""One upstream HTTP/1.1 connection: an ``asyncio.Protocol`` driving the llhttp parser.

A connection carries one exchange at a time (no pipelining). ``send()`` writes the request
and returns a future resolved with the :class:`UpstreamResponse` once the final response
headers are parsed; body chunks are then pushed into the response. When the response has
been received completely the connection hands itself back to its pool (or closes).

A request body given as a `BodySource` is sent after the head by a task of its own, chunk
by chunk as it arrives, waiting whenever the transport's write buffer is full (the
backend is slow to read). The response may come while it is being sent; if it ends
first, the rest of the body is not sent and the connection is not reused.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from .endpoint import Endpoint
from .errors import (
    RequestBodyFailed,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    translate_exception,
)
from .request import BodySource
from .response import UpstreamResponse


class ConnectionOwner(Protocol):
    """Where a connection reports its life (`pool.UpstreamPool`)."""

    def _connection_made(self, conn: UpstreamConnection) -> None: ...
    def _connection_lost(self, conn: UpstreamConnection) -> None: ...
    def _release(self, conn: UpstreamConnection, reusable: bool) -> None: ...


__all__ = ["UpstreamConnection"]

# Buffered unread body above which the socket stops being read.
HIGH_WATER = 256 * 1024

_IDLE, _WAIT_HEAD, _BODY, _CLOSED = 0, 1, 2, 3


class UpstreamConnection(asyncio.Protocol):
    """Protocol + parser for one pooled upstream connection (internal to the pool)."""

    __slots__ = (
        "_awaiting_body",
        "_body_task",
        "_buffered_head",
        "_cb_error",
        "_conn_header",
        "_done",
        "_drain",
        "_has_length",
        "_head_size",
        "_headers",
        "_interim",
        "_is_head",
        "_keep_alive",
        "_max_header_bytes",
        "_parser",
        "_pool",
        "_read_timeout",
        "_reason",
        "_replace_parser",
        "_req_close",
        "_response",
        "_state",
        "_te",
        "_timer",
        "_transport",
        "_until_eof",
        "_waiter",
        "endpoint",
        "got_response_bytes",
        "idle_since",
        "last_activity",
        "loop",
        "paused",
        "requests",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        pool: ConnectionOwner,
        loop: asyncio.AbstractEventLoop,
        max_header_bytes: int,
    ) -> None:
        self.endpoint = endpoint
        self.loop = loop
        self._pool = pool
        self._max_header_bytes = max_header_bytes
        self._transport: asyncio.Transport | None = None
        self._parser: HttpResponseParser | None = None
        self._state = _IDLE
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._cb_error: UpstreamError | None = None
        self._is_head = False
        self._req_close = False
        self._done = False
        self._interim = False
        self._keep_alive = False
        self._until_eof = False
        self._replace_parser = False
        self._headers: list[tuple[str, str]] = []
        self._reason = b""
        self._head_size = 0
        self._buffered_head = 0
        self._has_length = False
        self._te: bytes | None = None
        self._conn_header: bytes | None = None
        self._body_task: asyncio.Task[None] | None = None
        #: The body task waits for the client (its silence is not the upstream's).
        self._awaiting_body = False
        #: Set while the transport's write buffer is over its high-water mark.
        self._drain: asyncio.Future[None] | None = None
        self.paused = False
        self.got_response_bytes = False
        self.requests = 0
        self.last_activity = 0.0
        self.idle_since = 0.0

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.endpoint.label} state={self._state}>"

    # -- pool side ------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Idle and open: may carry a new request."""
        transport = self._transport
        return self._state == _IDLE and transport is not None and not transport.is_closing()

    def send(
        self,
        data: bytes,
        *,
        is_head: bool,
        req_close: bool,
        read_timeout: float,
        body: BodySource | None = None,
    ) -> asyncio.Future[UpstreamResponse]:
        """Write one serialised request (then ``body``, if given, as it arrives: chunked
        when its length is unknown); the future resolves with the response head or
        fails with an :class:`UpstreamError`."""
        loop = self.loop
        waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
        transport = self._transport
        if self._state != _IDLE or transport is None:
            waiter.set_exception(UpstreamClosed("connection is not idle"))
            return waiter
        self._waiter = waiter
        self._state = _WAIT_HEAD
        self._is_head = is_head
        self._req_close = req_close
        self._done = False
        self._interim = False
        self._keep_alive = False
        self._until_eof = False
        self._cb_error = None
        self._buffered_head = 0
        self.got_response_bytes = False
        self.requests += 1
        if self._parser is None:
            self._parser = HttpResponseParser(self)
        self._read_timeout = read_timeout
        now = loop.time()
        self.last_activity = now
        # One timer per exchange; it re-arms itself while there is progress (see _on_timer).
        self._timer = loop.call_at(now + read_timeout, self._on_timer)
        try:
            transport.write(data)
        except (OSError, RuntimeError) as exc:  # uvloop raises RuntimeError once closed
            err = UpstreamClosed(f"write failed: {exc!r}")
            err.__cause__ = exc
            self._fail(err)
            return waiter
        if body is not None:
            self._body_task = loop.create_task(self._send_body(transport, body))
        return waiter

    def abort(self) -> None:
        """Close now and fail the exchange in flight, if any. The connection is not reused."""
        self._fail(UpstreamClosed("connection aborted", response_started=self._state == _BODY))

    def abort_if_waiting(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        """Abort only if ``waiter`` is still the pending exchange (caller was cancelled)."""
        if self._waiter is waiter:
            self.abort()

    def close(self) -> None:
        """Gracefully close an idle connection."""
        self._teardown(abort=False)

    def resume_reading(self) -> None:
        """Called by the response once the consumer drained its buffer."""
        if self.paused:
            self.paused = False
            if self._transport is not None and self._state != _CLOSED:
                self._transport.resume_reading()

    async def _send_body(self, transport: asyncio.Transport, body: BodySource) -> None:
        chunked = body.length is None
        try:
            while True:
                self._awaiting_body = True
                try:
                    chunk = await body.read()
                finally:
                    self._awaiting_body = False
                if self._state == _CLOSED:
                    return
                if not chunk:
                    break
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                self.last_activity = self.loop.time()
                drain = self._drain
                if drain is not None:
                    await drain
            if chunked and self._state != _CLOSED:
                transport.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = RequestBodyFailed(f"the request body could not be read: {exc}")
            err.__cause__ = exc
            self._fail(err)
            return
        self._body_task = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio.Transport, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        self._pool._connection_made(self)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state != _WAIT_HEAD and state != _BODY:
            # Bytes nobody asked for (idle connection): the stream is out of sync.
            self._teardown(abort=True)
            return
        self.last_activity = self.loop.time()
        self.got_response_bytes = True
        parser = self._parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            err = self._cb_error
            if err is None:
                err = translate_exception(exc, phase="read")
            elif err.__cause__ is None:
                err.__cause__ = exc
            err.response_started = self._state == _BODY
            self._fail(err)
            return
        if self._done:
            if self._body_task is not None:
                # The response ended before the request body was sent whole: stop
                # sending it; the connection cannot carry another request.
                self._stop_body()
                self._req_close = True
            self._release()
        elif self._state == _WAIT_HEAD:
            # Bound what llhttp may buffer for a header it has not finished yet.
            self._buffered_head += len(data)
            if self._buffered_head > self._max_header_bytes:
                self._fail(
                    UpstreamProtocolError(
                        f"response header block exceeds {self._max_header_bytes} bytes"
                    )
                )

    def eof_received(self) -> bool | None:
        # Let the transport close; connection_lost decides what the EOF means.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = _CLOSED
        self._cancel_timer()
        self._stop_body()
        self.resume_writing()
        if state == _WAIT_HEAD:
            waiter = self._waiter
            self._waiter = None
            if waiter is not None and not waiter.done():
                err = (
                    UpstreamClosed("connection closed before the response headers")
                    if exc is None
                    else translate_exception(exc, phase="read")
                )
                waiter.set_exception(err)
        elif state == _BODY and not self._done:
            response = self._response
            if response is not None:
                if exc is None and self._until_eof:
                    response._finish()  # EOF is this body's delimiter
                else:
                    err = (
                        UpstreamClosed(
                            "connection closed before the response body was complete",
                            response_started=True,
                        )
                        if exc is None
                        else translate_exception(exc, phase="read", response_started=True)
                    )
                    response._set_error(err)
        self._response = None
        # The parser holds bound methods of self: break the cycle.
        self._parser = None
        self._pool._connection_lost(self)

    # -- llhttp callbacks -----------------------------------------------------------------

    def _protocol_error(self, message: str) -> UpstreamProtocolError:
        err = UpstreamProtocolError(message)
        self._cb_error = err
        return err

    def on_message_begin(self) -> None:
        if self._state != _WAIT_HEAD or self._done:
            raise self._protocol_error("unexpected data after the response")
        self._headers = []
        self._reason = b""
        self._head_size = 0
        self._has_length = False
        self._te = None
        self._conn_header = None

    def on_status(self, status: bytes) -> None:
        self._reason += status  # llhttp may deliver the span in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size + len(name) + len(value) + 4
        self._head_size = size
        if size > self._max_header_bytes:
            raise self._protocol_error(
                f"response header block exceeds {self._max_header_bytes} bytes"
            )
        n = len(name)
        # Only framing/persistence headers are inspected; length first keeps this cheap.
        if n == 14 or n == 17 or n == 10:
            lname = name.lower()
            if lname == b"content-length":
                self._has_length = True
            elif lname == b"transfer-encoding":
                te = value.lower()
                self._te = te if self._te is None else self._te + b"," + te
            elif lname == b"connection":
                conn = value.lower()
                self._conn_header = (
                    conn if self._conn_header is None else self._conn_header + b"," + conn
                )
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise self._protocol_error("101 Switching Protocols is not supported")
            self._interim = True  # 100 Continue, 103 Early Hints...: skipped
            return
        http_version = parser.get_http_version()
        if http_version == "1.1":
            version = "HTTP/1.1"
        elif http_version == "1.0":
            version = "HTTP/1.0"
        else:
            raise self._protocol_error(f"unsupported HTTP version {http_version}")
        if self._is_head or status == 204 or status == 304:
            self._until_eof = False
        else:
            te = self._te
            if te is not None:
                self._until_eof = not te.rstrip().endswith(b"chunked")
            else:
                self._until_eof = not self._has_length
        response = UpstreamResponse(
            self, status, self._reason.decode("latin-1").strip(), self._headers, version
        )
        self._response = response
        self._state = _BODY
        waiter = self._waiter
        self._waiter = None
        if self._is_head:
            # llhttp does not know the request method and would wait for a body announced
            # by Content-Length / chunked: the message ends here and this parser is dropped.
            self._replace_parser = True
            self._keep_alive = _keep_alive(version, self._conn_header)
            self._message_done()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if self._done or response is None:
            raise self._protocol_error("unexpected data after the response")
        if response._feed(body) > HIGH_WATER and not self.paused:
            self.paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._done:  # HEAD: already finished at headers-complete
            return
        parser = self._parser
        assert parser is not None
        self._keep_alive = parser.should_keep_alive()
        self._message_done()

    # -- internals ------------------------------------------------------------------------

    def _message_done(self) -> None:
        self._done = True
        self._cancel_timer()
        response = self._response
        if response is not None:
            response._finish()

    def _release(self) -> None:
        """After feed_data: hand the connection back to the pool (or close it)."""
        self._response = None
        if self.paused:
            self.resume_reading()
        if self._replace_parser:
            self._replace_parser = False
            self._parser = None  # a fresh one is created for the next request
        self._state = _IDLE
        self.idle_since = self.last_activity
        reusable = self._keep_alive and not self._req_close and not self._until_eof
        self._pool._release(self, reusable)

    def _on_timer(self) -> None:
        self._timer = None
        state = self._state
        if (state != _WAIT_HEAD and state != _BODY) or self._done:
            return
        now = self.loop.time()
        if self.paused or self._awaiting_body:
            # Upstream data is waiting for our consumer, or the request body for the
            # client: not upstream inactivity.
            self.last_activity = now
        deadline = self.last_activity + self._read_timeout
        if deadline > now:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._fail(
            UpstreamTimeout(
                f"no data from {self.endpoint.label} for {self._read_timeout:g}s",
                phase="read",
                response_started=state == _BODY,
            )
        )

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def _fail(self, err: UpstreamError) -> None:
        """Deliver ``err`` to whoever waits on this exchange, then close the connection."""
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)
        response = self._response
        if response is not None:
            err.response_started = True
            response._set_error(err)
        self._teardown(abort=True)

    def _stop_body(self) -> None:
        task = self._body_task
        if task is not None:
            self._body_task = None
            if not task.done() and task is not asyncio.current_task():
                task.cancel()

    def _teardown(self, *, abort: bool) -> None:
        self._state = _CLOSED
        self._cancel_timer()
        self._stop_body()
        self._waiter = None
        self._response = None
        transport = self._transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()


def _keep_alive(version: str, connection: bytes | None) -> bool:
    """HTTP/1.1 persists unless ``close``; HTTP/1.0 only with ``keep-alive``."""
    tokens = {t.strip() for t in connection.split(b",")} if connection else set()
    if version == "HTTP/1.1":
        return b"close" not in tokens
    return b"keep-alive" in tokens and b"close" not in tokens
