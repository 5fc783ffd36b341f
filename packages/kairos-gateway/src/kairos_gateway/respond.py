"""The answering half of an exchange: its state, what policies see, and the responses.

`Responder` holds the state of one client request and implements `chain.Request`, the
face policies see. It writes responses, whole (the gateway's own answers and problems)
or relayed from upstream as they arrive, running the ``on_response`` and ``on_chunk``
phases, and records the exchange exactly once (metrics, access-log line,
``on_complete``), however it ends. `exchange.Exchange` adds the request's flow: reading
it, choosing its handler, the proxy task.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol, cast

from kairos_core import MAX_BODY_LIMIT, KairosError, Match, PayloadTooLarge, RouteNotFound
from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.iostream import StreamClosedError

from . import problems
from .chain import EMPTY_CHAIN, Chain, Policy, PolicyFailed, ResponseHead
from .headers import (
    client_response_headers,
    client_response_pairs,
    complete_response_headers,
    upstream_request_headers,
)
from .http1 import StrictHTTP1Connection
from .messages import (
    ApiRequest,
    ApiResponse,
    OpsHandler,
    Response,
    StreamedResponse,
    reason_phrase,
)
from .metrics import UNMATCHED, RouteStats
from .refetch import Replay
from .upstream import UpstreamError as UpstreamFailure
from .upstream import UpstreamResponse

if TYPE_CHECKING:
    from kairos_core import CompiledRoute
    from tornado.httpserver import _HTTPRequestContext as HTTPRequestContext

    from .accesslog import AccessLog
    from .body import RequestBody
    from .forward import Attempt
    from .runtime import Runtime
    from .snapshot import RouteRuntime, Snapshot
    from .tracing import RequestTrace, Tracer

__all__ = ["CLIENT_CLOSED", "Host", "Responder", "body_too_large"]

log = logging.getLogger("kairos.gateway")

# Status recorded when the client disconnects before its response was complete
# (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499
#: Seconds a streamed answer's write may wait for a client that does not read, before
#: the connection is cut (a stalled client must not hold its stream forever).
STREAM_WRITE_TIMEOUT_S = 10.0


class Host(Protocol):
    """What an exchange needs from the process serving it (the app's `Gateway`)."""

    runtime: Runtime
    ops: Mapping[str, OpsHandler]
    access_log: AccessLog
    #: Connections waiting for their next request, with the loop time they began.
    waiting: dict[HTTP1ServerConnection, float]
    draining: bool
    max_header_size: int
    #: Trace context for every request (None: propagation off).
    tracer: Tracer | None

    @property
    def has_admin_listener(self) -> bool: ...
    async def handle_management(self, request: ApiRequest) -> ApiResponse | StreamedResponse: ...
    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...


#: Statuses whose responses carry no content and, from the gateway, no Content-Length
#: (a 304's would have to be the stored 200's length, RFC 9110 8.6).
_NO_CONTENT = frozenset({204, 304})


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this route accepts ({limit} bytes)")


class Responder(httputil.HTTPMessageDelegate):
    __slots__ = (
        "_admin_listener",
        "_attempt",
        "_body",
        "_body_limit",
        "_body_stream",
        "_defaults",
        "_done",
        "_duration",
        "_error",
        "_keep_body",
        "_ops",
        "_preflight",
        "_respond",
        "_response",
        "_route",
        "_started",
        "_state",
        "_stats",
        "_task",
        "bytes_in",
        "bytes_out",
        "chain",
        "claims",
        "client_ip",
        "conn",
        "headers",
        "host",
        "match",
        "method",
        "path",
        "peer_ip",
        "query",
        "request_id",
        "response_headers",
        "server_conn",
        "snapshot",
        "status",
        "trace",
    )

    method: str
    path: str
    query: str
    headers: httputil.HTTPHeaders
    request_id: str
    peer_ip: str
    client_ip: str
    snapshot: Snapshot

    def __init__(
        self,
        host: Host,
        server_conn: HTTP1ServerConnection,
        conn: StrictHTTP1Connection,
        *,
        admin_listener: bool = False,
    ) -> None:
        self.host = host
        self._admin_listener = admin_listener
        self.server_conn = server_conn
        self.conn = conn
        self._done = False
        self._started = 0.0
        self._duration = 0.0
        self._body: list[bytes] = []
        #: The body streamed upstream as it arrives (None: read whole into _body).
        self._body_stream: RequestBody | None = None
        self._keep_body = False
        self._body_limit = MAX_BODY_LIMIT
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = 0
        #: The handler `finish()` calls, chosen when the headers arrived. A function of
        #: the class, not a bound method: that would tie the exchange in a reference
        #: cycle and leave every request's objects to the cyclic garbage collector.
        self._respond: Callable[[Any], None] = Responder._answer_error
        self._error: KairosError | None = None
        self._ops: OpsHandler | None = None
        self._preflight: list[tuple[str, str]] = []
        self.match: Match | None = None
        self._route: RouteRuntime | None = None
        self.chain: Chain = EMPTY_CHAIN
        self.claims: Mapping[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        #: Added to whatever response this exchange sends (CORS, rate-limit fields).
        self.response_headers: list[tuple[str, str]] = []
        #: Added where the response has no header of the name (security headers).
        self._defaults: Sequence[tuple[str, str]] = ()
        self._attempt: Attempt | None = None
        self._response: UpstreamResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._stats: RouteStats | None = None
        #: The request's trace context (None: propagation off).
        self.trace: RequestTrace | None = None

    # -- what policies see (chain.Request) -----------------------------------------

    @property
    def route(self) -> CompiledRoute | None:
        match = self.match
        return None if match is None else match.route

    @property
    def params(self) -> Mapping[str, str]:
        match = self.match
        return {} if match is None else match.params

    @property
    def state(self) -> dict[str, Any]:
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    @property
    def https(self) -> bool:
        if cast("HTTPRequestContext", self.conn.context).protocol == "https":
            return True
        return (
            self.snapshot.is_trusted_proxy(self.peer_ip)
            and self.headers.get("X-Forwarded-Proto", "").lower() == "https"
        )

    @property
    def peer_certificate(self) -> bytes | None:
        sock = self.conn.stream.socket
        if not isinstance(sock, ssl.SSLSocket):
            return None
        try:
            return sock.getpeercert(binary_form=True)
        except ValueError:  # closed meanwhile
            return None

    @property
    def duration_s(self) -> float:
        return self._duration if self._done else perf_counter() - self._started

    @property
    def backend(self) -> str:
        attempt = self._attempt
        return "" if attempt is None else attempt.state.address

    def upstream_headers(self, *, propagate: bool = True) -> list[tuple[str, str]]:
        """The client's headers as a backend gets them (`headers.upstream_request_headers`
        for this exchange; with ``propagate``, the trace context when there is one)."""
        trace = self.trace if propagate else None
        snapshot = self.snapshot
        return upstream_request_headers(
            self.headers,
            client_ip=self.peer_ip,
            proto=cast("HTTPRequestContext", self.conn.context).protocol,
            request_id=self.request_id,
            trust_forwarded=snapshot.is_trusted_proxy(self.peer_ip),
            forwarded=snapshot.config.forwarded_header,
            traced=trace is not None,
            tracestate=None if trace is None else trace.state,
        )

    def replay(self, state: dict[str, Any]) -> Replay | None:
        if self.match is None or self._route is None:
            return None  # not proxied: no route's backends to send it to
        return Replay(self, state)

    def add_default_headers(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._defaults = pairs if not self._defaults else [*self._defaults, *pairs]

    def limit_body(self, max_bytes: int) -> None:
        # Policies only tighten the limit: a plugin's larger one never lifts the route's.
        max_bytes = self._body_limit = min(self._body_limit, max_bytes)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) <= max_bytes:
            return
        # Tornado would answer a body over its own limit with a bare 400 of its own.
        self.conn.set_max_body_size(int(length))
        raise body_too_large(max_bytes)

    def _answer_error(self) -> None:
        self._send_error(self._error or RouteNotFound("no route"))

    # -- relaying an upstream response ---------------------------------------------

    async def _relay(self, attempt: Attempt, response: UpstreamResponse) -> None:
        """Stream ``response`` to the client; what is already buffered goes out with
        the headers in one write."""
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
        chain = self.chain
        status, reason = response.status, response.reason
        if chain.on_response:
            # Hooks see what the client will get (hop-by-hop headers gone, the
            # policies' response headers in), before defaults and X-Request-Id.
            head = ResponseHead(
                status,
                reason,
                client_response_pairs(response.headers, self.response_headers),
                from_backend=True,
            )
            self._run_on_response(head)
            status, reason = head.status, head.reason
            headers = complete_response_headers(
                head.headers,
                request_id=self.request_id,
                close=self.host.draining,
                defaults=self._defaults,
            )
        else:
            headers = client_response_headers(
                response.headers,
                request_id=self.request_id,
                close=self.host.draining,
                extra=self.response_headers,
                defaults=self._defaults,
            )
        filters = chain.on_chunk
        if filters:
            data = self._filter(data)
            if ended:
                data += self._filter(b"")
        self.status = status
        self.bytes_out = len(data)
        start = httputil.ResponseStartLine("HTTP/1.1", status, reason)
        try:
            written = conn.write_headers(start, headers, data or None)
            if not ended:
                await written
                while chunk := await response.read():
                    if filters:
                        chunk = self._filter(chunk)
                    self.bytes_out += len(chunk)
                    await conn.write(chunk)
                if filters and (tail := self._filter(b"")):
                    self.bytes_out += len(tail)
                    await conn.write(tail)
            conn.finish()
        except UpstreamFailure as exc:
            # Part of the response is already with the client: all that is left is to
            # cut the connection so the client sees an incomplete response.
            attempt.failed(exc, self.request_id)
            self._cut()
            return
        except StreamClosedError:
            response.abort()
            self.status = CLIENT_CLOSED
        self._complete()

    def _filter(self, chunk: bytes) -> bytes:
        for policy, hook in self.chain.on_chunk:
            try:
                chunk = hook(self, chunk)
            except Exception as exc:
                raise self._policy_failed(policy) from exc
        return chunk

    def _run_on_response(self, head: ResponseHead) -> None:
        for policy, hook in self.chain.on_response:
            try:
                hook(self, head)
            except Exception as exc:
                if isinstance(exc, KairosError):
                    raise
                raise self._policy_failed(policy) from exc

    async def _send_streamed(self, response: StreamedResponse) -> None:
        """Write a streamed answer (a policy's, or ``GET /api/events``): the head
        (through ``on_response``), then each chunk as ``body`` yields it (through
        ``on_chunk``), waiting for the client to take each one, at most
        `STREAM_WRITE_TIMEOUT_S` (a client that stops reading is cut off). A client
        that goes away cancels the task (`Exchange._client_closed`); ``body`` is closed
        however the answer ended."""
        body = response.body
        metrics = self.host.runtime.metrics
        if response.held:
            # Open by design (an event stream): not a request being worked on, so it
            # stays out of the active-requests gauge (the dashboard's "in flight now").
            metrics.active_requests -= 1
        try:
            head = ResponseHead(
                response.status,
                reason_phrase(response.status),
                [*response.headers, *self.response_headers],
            )
            if self.chain.on_response:
                try:
                    self._run_on_response(head)
                except KairosError as exc:
                    self._send_error(exc, hooks=False)
                    return
            headers = complete_response_headers(
                head.headers,
                request_id=self.request_id,
                close=self.host.draining,
                defaults=self._defaults,
            )
            self.status = head.status
            conn = self.conn
            filters = self.chain.on_chunk
            start = httputil.ResponseStartLine("HTTP/1.1", head.status, head.reason)
            try:
                # No Content-Length: Tornado sends HTTP/1.1 chunked (HTTP/1.0: until close).
                conn.write_headers(start, headers)
                if self.method != "HEAD":
                    async for chunk in body:
                        if filters:
                            chunk = self._filter(chunk)
                        if chunk:
                            self.bytes_out += len(chunk)
                            async with asyncio.timeout(STREAM_WRITE_TIMEOUT_S):
                                await conn.write(chunk)
                    if filters and (tail := self._filter(b"")):
                        self.bytes_out += len(tail)
                        await conn.write(tail)
                conn.finish()
            except StreamClosedError:
                self.status = CLIENT_CLOSED
            except TimeoutError:
                self.status = CLIENT_CLOSED
                conn.close()
            except Exception:
                # The body failed with the head already out: the client sees the
                # response incomplete.
                log.warning(
                    "streamed response broke off",
                    extra={"fields": {"request_id": self.request_id}},
                    exc_info=True,
                )
                self._cut()
                return
            self._complete()
        finally:
            if response.held:
                metrics.active_requests += 1
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()
            if response.close is not None:
                response.close()

    # -- responses -----------------------------------------------------------------

    def _reject(self, error: KairosError) -> None:
        """Answer now, before the request body has arrived; Tornado then closes the
        connection rather than read a body nobody wants."""
        self._send_error(error, close=True)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self._send_whole(response.status, response.headers, response.body, close=close)

    def _send_error(self, error: KairosError, *, close: bool = False, hooks: bool = True) -> None:
        trace = self.trace
        if trace is not None:
            trace.failed(error.type)
        status, headers, body = problems.render(
            error, self.request_id, None if trace is None else trace.trace_id
        )
        self._send_whole(
            status,
            [("Content-Type", problems.CONTENT_TYPE), *headers],
            body,
            close=close,
            hooks=hooks,
        )

    def _send_whole(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        close: bool = False,
        hooks: bool = True,
    ) -> None:
        reason = reason_phrase(status)
        pairs = [*headers, *self.response_headers]
        if hooks and self.chain.on_response:
            head = ResponseHead(status, reason, pairs)
            try:
                self._run_on_response(head)
            except KairosError as exc:
                # A policy refused the response: send its problem, without the phase.
                self._send_error(exc, close=close, hooks=False)
                return
            status, reason, pairs = head.status, head.reason, head.headers
            if head.body is not None:
                body = head.body
        present = {name.lower() for name, _ in pairs} if self._defaults else ()
        pairs += [(n, v) for n, v in self._defaults if n.lower() not in present]
        if status not in _NO_CONTENT:
            pairs.append(("Content-Length", str(len(body))))
        elif body:
            body = b""  # a 204 or 304 has no content (RFC 9110 15.3.5, 15.4.5)
        pairs.append(("X-Request-Id", self.request_id))
        if close or self.host.draining:
            pairs.append(("Connection", "close"))
        self.status = status
        self.bytes_out = len(body)
        self.conn.write_whole(status, reason, pairs, b"" if self.method == "HEAD" else body)
        self._complete()

    def _cut(self) -> None:
        """Close the connection mid-response: the client sees it incomplete."""
        self.conn.close()
        self._complete()

    # -- failures ------------------------------------------------------------------

    def _policy_failed(self, policy: Policy) -> PolicyFailed:
        log.exception(
            "policy failed",
            extra={"fields": {"request_id": self.request_id, "policy": policy.name}},
        )
        return PolicyFailed(policy.name)

    def _unexpected(self, message: str) -> KairosError:
        log.exception(message, extra={"fields": {"request_id": self.request_id}})
        return KairosError("the gateway failed to handle the request")

    # -- bookkeeping ---------------------------------------------------------------

    def _complete(self) -> None:
        """Record the exchange once: metrics, access log, ``on_complete``, in-flight."""
        if self._done:
            return
        self._done = True
        self._duration = duration = perf_counter() - self._started
        stream = self._body_stream
        if stream is not None:
            # Nobody reads the rest of the body now: Tornado may read on and drop it.
            stream.fail(ConnectionAbortedError("the exchange ended"))
        stats = self._stats
        if stats is not None:
            stats.record(self.method, self.status, duration, self.bytes_in, self.bytes_out)
        host = self.host
        trace = self.trace
        host.access_log.record(
            request_id=self.request_id,
            method=self.method,
            path=self.path,
            route=stats.label if stats is not None else UNMATCHED,
            backend=self.backend,
            status=self.status,
            duration_s=duration,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            client=self.client_ip,
            scheme=cast("HTTPRequestContext", self.conn.context).protocol,
            trace_id="" if trace is None else trace.trace_id,
        )
        if trace is not None:
            trace.finish(self)
        for policy, hook in self.chain.on_complete:
            try:
                hook(self)
            except Exception:
                self._policy_failed(policy)
        host.request_finished()
