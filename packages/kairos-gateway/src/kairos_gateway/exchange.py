"""One client request, from its headers to the last byte of the response.

`Exchange` is Tornado's `HTTPMessageDelegate` for a single request. It resolves the
request when its headers arrive (gateway endpoint, route, or an error), buffers the
body, and on `finish()` answers: gateway endpoints and errors synchronously, proxied
requests in one task that sends the request upstream and streams the response back as
it arrives. It records metrics and the access-log line exactly once, however the
exchange ends (response sent, client gone, upstream failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, cast

from kairos_core import (
    RESERVED_PATHS,
    RESERVED_PREFIXES,
    BadPath,
    BadRequest,
    InvalidPath,
    KairosError,
    Match,
    MethodNotAllowed,
    MethodNotAllowedResult,
    RouteNotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.iostream import StreamClosedError

from . import problems
from .headers import client_response_headers, request_id_from, upstream_request_headers
from .metrics import UNMATCHED, RouteStats
from .upstream import UpstreamError as UpstreamFailure
from .upstream import UpstreamResponse
from .upstream import UpstreamTimeout as UpstreamTimedOut

if TYPE_CHECKING:
    from tornado.httpserver import _HTTPRequestContext as HTTPRequestContext

    from .app import Gateway
    from .snapshot import RouteRuntime, Snapshot, Upstream

log = logging.getLogger("kairos.gateway")

#: A gateway endpoint: takes the exchange, returns status, content type and body.
OpsHandler = Callable[["Exchange"], tuple[int, str, bytes]]

# Status recorded when the client disconnects before its response was complete
# (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499

_OPS_METHODS = frozenset({"GET", "HEAD"})


def _reserved(path: str) -> bool:
    if path in RESERVED_PATHS:
        return True
    return any(path == root or path.startswith(root + "/") for root in RESERVED_PREFIXES)


class Exchange(httputil.HTTPMessageDelegate):
    __slots__ = (
        "_body",
        "_bytes_in",
        "_bytes_out",
        "_done",
        "_error",
        "_match",
        "_ops",
        "_response",
        "_started",
        "_stats",
        "_status",
        "_task",
        "_upstream",
        "client_ip",
        "conn",
        "gateway",
        "method",
        "path",
        "query",
        "request_headers",
        "request_id",
        "server_conn",
        "snapshot",
    )

    method: str
    path: str
    query: str
    request_headers: httputil.HTTPHeaders
    request_id: str
    client_ip: str
    snapshot: Snapshot

    def __init__(
        self, gateway: Gateway, server_conn: HTTP1ServerConnection, conn: HTTP1Connection
    ) -> None:
        self.gateway = gateway
        self.server_conn = server_conn
        self.conn = conn
        self._done = False
        self._started = 0.0
        self._body: list[bytes] = []
        self._bytes_in = 0
        self._bytes_out = 0
        self._status = 0
        self._ops: OpsHandler | None = None
        self._error: KairosError | None = None
        self._match: Match | None = None
        self._upstream: Upstream | None = None
        self._response: UpstreamResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._stats: RouteStats | None = None

    # -- HTTPMessageDelegate -------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        gateway = self.gateway
        gateway.waiting.pop(self.server_conn, None)
        start_line = cast(httputil.RequestStartLine, start_line)
        self.method = start_line.method
        self.request_headers = headers
        self.request_id = request_id_from(headers)
        self.client_ip = cast("HTTPRequestContext", self.conn.context).remote_ip
        self.snapshot = snapshot = gateway.snapshot
        path, _, self.query = start_line.path.partition("?")
        self.path = path
        gateway.request_started()
        self._started = perf_counter()

        ops = gateway.ops.get(path)
        if ops is not None:
            self._stats = gateway.metrics.route(path)
            if self.method in _OPS_METHODS:
                self._ops = ops
            else:
                self._error = MethodNotAllowed(f"{self.method} is not allowed", allow=_OPS_METHODS)
            return
        if path.startswith("/api/") and _reserved(path):
            # A management path with no handler in this version: still the gateway's,
            # never proxied, so a route such as /api/{*rest} cannot capture it.
            self._fail(RouteNotFound(f"no route for {path}"))
            return
        if not path.startswith("/"):
            self._fail(BadRequest("the request target must be a path starting with '/'"))
            return
        result = snapshot.table.match(self.method, path)
        if isinstance(result, Match):
            runtime = snapshot.routes[result.route.index]
            self._stats = runtime.stats
            if runtime.refusal is None:
                self._match = result
            else:
                self._error = ServiceUnavailable(runtime.refusal)
        elif isinstance(result, MethodNotAllowedResult):
            self._fail(MethodNotAllowed(f"{self.method} is not allowed", allow=result.allow))
        elif isinstance(result, BadPath):
            self._fail(InvalidPath(result.reason))
        else:
            self._fail(RouteNotFound(f"no route for {path}"))

    def data_received(self, chunk: bytes) -> None:
        self._bytes_in += len(chunk)
        if self._match is not None:
            self._body.append(chunk)

    def finish(self) -> None:
        if self._ops is not None:
            status, content_type, body = self._ops(self)
            self._send_whole(status, [("Content-Type", content_type)], body)
        elif self._match is not None:
            task = asyncio.get_running_loop().create_task(self._proxy(self._match))
            self._task = task
            self.conn.set_close_callback(self._client_closed)
        else:
            self._send_error(self._error or RouteNotFound("no route"))

    def on_connection_close(self) -> None:
        # The client went away before it finished sending the request.
        self.gateway.waiting.pop(self.server_conn, None)
        if self._started:
            self._status = CLIENT_CLOSED
            self._complete()

    # -- responses -----------------------------------------------------------------

    def _fail(self, error: KairosError) -> None:
        self._error = error
        self._stats = self.gateway.metrics.route(UNMATCHED)

    def _send_whole(self, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> None:
        out = httputil.HTTPHeaders()
        for name, value in headers:
            out.add(name, value)
        out["Content-Length"] = str(len(body))
        out["X-Request-Id"] = self.request_id
        if self.gateway.draining:
            out["Connection"] = "close"
        self._status = status
        self._bytes_out = len(body)
        start = httputil.ResponseStartLine("HTTP/1.1", status, HTTPStatus(status).phrase)
        self.conn.write_headers(start, out, body if self.method != "HEAD" else None)
        self.conn.finish()
        self._complete()

    def _send_error(self, error: KairosError) -> None:
        status, headers, body = problems.render(error, self.request_id)
        self._send_whole(status, [("Content-Type", problems.CONTENT_TYPE), *headers], body)

    # -- proxying ------------------------------------------------------------------

    async def _proxy(self, match: Match) -> None:
        try:
            await self._forward(match)
        except Exception:
            log.exception(
                "unexpected error while proxying", extra={"fields": {"request_id": self.request_id}}
            )
            if self._status == 0:
                self._send_error(KairosError("the gateway failed to handle the request"))
            else:
                self.conn.close()
                self._complete()

    async def _forward(self, match: Match) -> None:
        runtime = self.snapshot.routes[match.route.index]
        upstream = runtime.pick()
        self._upstream = upstream
        try:
            response = await self._send_upstream(runtime, upstream, match)
        except UpstreamTimedOut as exc:
            self._upstream_failed(upstream, exc)
            self._send_error(UpstreamTimeout("the backend did not answer in time"))
            return
        except UpstreamFailure as exc:
            self._upstream_failed(upstream, exc)
            self._send_error(UpstreamError("the backend could not be reached or answered badly"))
            return
        except asyncio.CancelledError:
            return  # the client went away; _client_closed has recorded it
        self._response = response
        try:
            await self._relay(response)
        except UpstreamFailure as exc:
            # Part of the response is already with the client: all we can do is cut
            # the connection so the client sees an incomplete response.
            self._upstream_failed(upstream, exc)
            self.conn.close()
            self._complete()
        except (StreamClosedError, asyncio.CancelledError):
            response.abort()
            self._status = CLIENT_CLOSED
            self._complete()

    async def _send_upstream(
        self, runtime: RouteRuntime, upstream: Upstream, match: Match
    ) -> UpstreamResponse:
        context = cast("HTTPRequestContext", self.conn.context)
        incoming = self.request_headers
        trusted = self.snapshot.is_trusted_proxy(self.client_ip)
        host = upstream.endpoint.host_header
        if runtime.preserve_host:
            host = incoming.get("Host") or host
        headers = upstream_request_headers(
            incoming,
            host=host,
            client_ip=self.client_ip,
            proto=context.protocol,
            request_id=self.request_id,
            trust_forwarded=trusted,
        )
        target = match.upstream_path
        if self.query:
            target = f"{target}?{self.query}"
        body = b"".join(self._body) if self._body else b""
        sent = perf_counter()
        response = await self.gateway.pool.request(
            upstream.endpoint,
            self.method,
            target,
            headers,
            body,
            connect_timeout=runtime.connect_timeout_s,
            read_timeout=runtime.read_timeout_s,
        )
        upstream.stats.duration.observe(perf_counter() - sent)
        return response

    async def _relay(self, response: UpstreamResponse) -> None:
        """Stream `response` to the client; what is already buffered goes out with the
        headers in one write."""
        conn = self.conn
        first: list[bytes] = []
        ended = False
        while True:
            chunk = response.read_nowait()
            if chunk is None:
                break
            if not chunk:
                ended = True
                break
            first.append(chunk)
        data = b"".join(first)
        headers = client_response_headers(
            response.headers, request_id=self.request_id, close=self.gateway.draining
        )
        self._status = response.status
        self._bytes_out = len(data)
        start = httputil.ResponseStartLine("HTTP/1.1", response.status, response.reason)
        written = conn.write_headers(start, headers, data or None)
        if not ended:
            await written
            while chunk := await response.read():
                self._bytes_out += len(chunk)
                await conn.write(chunk)
        conn.finish()
        self._complete()

    def _upstream_failed(self, upstream: Upstream, exc: UpstreamFailure) -> None:
        upstream.stats.error(exc.kind)
        log.warning(
            "upstream request failed",
            extra={
                "fields": {
                    "request_id": self.request_id,
                    "backend": upstream.label,
                    "kind": exc.kind,
                    "error": str(exc) or type(exc).__name__,
                }
            },
        )

    def _client_closed(self) -> None:
        if self._done:
            return
        response = self._response
        if response is not None:
            response.abort()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        self._status = CLIENT_CLOSED
        self._complete()

    # -- bookkeeping ---------------------------------------------------------------

    def _complete(self) -> None:
        """Record the exchange once: metrics, access log, in-flight count."""
        if self._done:
            return
        self._done = True
        duration = perf_counter() - self._started
        stats = self._stats
        if stats is not None:
            stats.record(self.method, self._status, duration, self._bytes_in, self._bytes_out)
        upstream = self._upstream
        self.gateway.access_log.record(
            request_id=self.request_id,
            method=self.method,
            path=self.path,
            route=stats.label if stats is not None else UNMATCHED,
            backend=upstream.label if upstream is not None else "",
            status=self._status,
            duration_s=duration,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            client=self.client_ip,
        )
        self.gateway.request_finished()


__all__ = ["CLIENT_CLOSED", "Exchange", "OpsHandler"]
