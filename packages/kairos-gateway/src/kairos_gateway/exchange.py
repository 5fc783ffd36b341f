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
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from kairos_core import (
    RESERVED_PATHS,
    RESERVED_PREFIXES,
    BadPath,
    BadRequest,
    CircuitOpen,
    HeadersTooLarge,
    InvalidPath,
    KairosError,
    Match,
    MethodNotAllowed,
    MethodNotAllowedResult,
    NoHealthyBackend,
    PayloadTooLarge,
    RouteNotFound,
    ServiceUnavailable,
    TooManyRequests,
    UpstreamError,
    UpstreamTimeout,
)
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.iostream import StreamClosedError

from . import problems
from .headers import (
    client_address,
    client_response_headers,
    fill_headers,
    request_id_from,
    upstream_request_headers,
)
from .management import MAX_API_BODY, ApiRequest, ApiResponse
from .metrics import MANAGEMENT, UNMATCHED, RouteStats
from .ratelimit import RateLimiter, limit_key
from .upstream import UpstreamError as UpstreamFailure
from .upstream import UpstreamResponse
from .upstream import UpstreamTimeout as UpstreamTimedOut

if TYPE_CHECKING:
    from tornado.httpserver import _HTTPRequestContext as HTTPRequestContext

    from .app import Gateway
    from .auth import Claims
    from .backends import BackendState
    from .breaker import Permit
    from .snapshot import RouteAuth, RouteRuntime, Snapshot

log = logging.getLogger("kairos.gateway")

#: A gateway endpoint: takes the exchange, returns status, content type and body.
OpsHandler = Callable[["Exchange"], tuple[int, str, bytes]]

# Status recorded when the client disconnects before its response was complete
# (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499

_OPS_METHODS = frozenset({"GET", "HEAD"})


def _header(headers: Sequence[tuple[str, str]], lower_name: str) -> str | None:
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None


def _apply_auth(
    headers: list[tuple[str, str]], auth: RouteAuth, claim_headers: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Drop client-sent copies of claim headers (else a client could forge a claim) and,
    with `strip_authorization`, the token; then add the verified claims."""
    drop = auth.forward_header_names
    if auth.strip_authorization:
        drop = drop | {"authorization"}
    if drop:
        headers = [(k, v) for k, v in headers if k.lower() not in drop]
    return headers + claim_headers if claim_headers else headers


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this route accepts ({limit} bytes)")


def header_bytes(headers: httputil.HTTPHeaders) -> int:
    """Size of the header block as received, near enough (names, values, separators)."""
    return sum(len(name) + len(value) + 4 for name, value in headers.get_all())


def _reserved(path: str) -> bool:
    if path in RESERVED_PATHS:
        return True
    return any(path == root or path.startswith(root + "/") for root in RESERVED_PREFIXES)


class Exchange(httputil.HTTPMessageDelegate):
    __slots__ = (
        "_admin_listener",
        "_backend",
        "_body",
        "_body_limit",
        "_bytes_in",
        "_bytes_out",
        "_done",
        "_error",
        "_extra_headers",
        "_management",
        "_match",
        "_ops",
        "_preflight",
        "_response",
        "_started",
        "_stats",
        "_status",
        "_task",
        "client_ip",
        "conn",
        "gateway",
        "method",
        "path",
        "peer_ip",
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
    peer_ip: str
    client_ip: str
    snapshot: Snapshot

    def __init__(
        self,
        gateway: Gateway,
        server_conn: HTTP1ServerConnection,
        conn: HTTP1Connection,
        *,
        admin_listener: bool = False,
    ) -> None:
        self.gateway = gateway
        self._admin_listener = admin_listener
        self.server_conn = server_conn
        self.conn = conn
        self._done = False
        self._started = 0.0
        self._body: list[bytes] = []
        self._body_limit = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._status = 0
        self._ops: OpsHandler | None = None
        self._error: KairosError | None = None
        self._match: Match | None = None
        self._management = False
        self._preflight: list[tuple[str, str]] | None = None
        #: Added to whatever response this exchange sends (CORS, rate-limit fields).
        self._extra_headers: list[tuple[str, str]] = []
        self._backend: BackendState | None = None
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
        self.method = method = start_line.method
        self.request_headers = headers
        self.request_id = request_id_from(headers)
        self.peer_ip = cast("HTTPRequestContext", self.conn.context).remote_ip
        self.snapshot = snapshot = gateway.snapshot
        self.client_ip = (
            client_address(self.peer_ip, headers, snapshot)
            if snapshot.trusted_proxies
            else self.peer_ip
        )
        path, _, self.query = start_line.path.partition("?")
        self.path = path
        gateway.request_started()
        self._started = perf_counter()

        if header_bytes(headers) > gateway.settings.max_header_size:
            self._stats = gateway.metrics.route(UNMATCHED)
            self._reject(HeadersTooLarge("the request headers are too large"))
            return
        ops = gateway.ops.get(path)
        if ops is not None:
            self._stats = gateway.metrics.route(path)
            if method in _OPS_METHODS:
                self._ops = ops
            else:
                self._error = MethodNotAllowed(f"{method} is not allowed", allow=_OPS_METHODS)
            return
        if path.startswith("/api/") and _reserved(path):
            # The management API: always the gateway's, never proxied, so a route such
            # as /api/{*rest} cannot capture it.
            if gateway.has_admin_listener and not self._admin_listener:
                # admin.listen is set: the API answers on the admin listener only.
                self._fail(RouteNotFound(f"no route for {path}"))
                return
            self._stats = gateway.metrics.route(MANAGEMENT)
            if not self._refuse_oversized_body(MAX_API_BODY):
                self._management = True
            return
        if self._admin_listener:
            # The admin listener serves the gateway's endpoints, never routes.
            self._fail(RouteNotFound(f"no management endpoint at {path}"))
            return
        if not path.startswith("/"):
            self._fail(BadRequest("the request target must be a path starting with '/'"))
            return
        origin = headers.get("Origin")
        if method == "OPTIONS" and origin is not None:
            requested = headers.get("Access-Control-Request-Method")
            if requested and self._answer_preflight(requested, origin):
                return
        result = snapshot.table.match(method, path)
        if isinstance(result, Match):
            runtime = snapshot.routes[result.route.index]
            self._stats = runtime.stats
            if runtime.cors is not None:
                self._extra_headers.extend(runtime.cors.response_headers(origin))
            if not self._refuse_oversized_body(runtime.max_body_size):
                self._match = result
            return
        if snapshot.cors is not None:
            self._extra_headers.extend(snapshot.cors.response_headers(origin))
        if isinstance(result, MethodNotAllowedResult):
            self._fail(MethodNotAllowed(f"{method} is not allowed", allow=result.allow))
        elif isinstance(result, BadPath):
            self._fail(InvalidPath(result.reason))
        else:
            self._fail(RouteNotFound(f"no route for {path}"))

    def _refuse_oversized_body(self, limit: int) -> bool:
        """Set the body limit; answer 413 now, before reading the body, when the
        announced Content-Length is over it (a chunked body is checked as it arrives)."""
        self._body_limit = limit
        length = self.request_headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) <= limit:
            return False
        # Tornado would answer a body over its own limit with a bare 400 of its own.
        self.conn.set_max_body_size(int(length))
        self._reject(_too_large(limit))
        return True

    def _answer_preflight(self, requested_method: str, origin: str) -> bool:
        """Set up the gateway's own answer to a CORS preflight, if a route with a CORS
        policy serves ``requested_method`` on this path."""
        snapshot = self.snapshot
        result = snapshot.table.match(requested_method.strip().upper(), self.path)
        if not isinstance(result, Match):
            return False
        runtime = snapshot.routes[result.route.index]
        if runtime.cors is None:
            return False
        self._stats = runtime.stats
        self._preflight = runtime.cors.preflight_headers(
            origin, self.request_headers.get("Access-Control-Request-Headers")
        )
        return True

    def data_received(self, chunk: bytes) -> None:
        if self._done:
            return
        self._bytes_in += len(chunk)
        if self._match is not None or self._management:
            if self._bytes_in > self._body_limit:
                self._match = None
                self._management = False
                self._body.clear()
                self._reject(_too_large(self._body_limit))
                return
            self._body.append(chunk)

    def finish(self) -> None:
        if self._done:
            return  # answered early (413, 431) while the request was still arriving
        if self._ops is not None:
            try:
                status, content_type, body = self._ops(self)
            except KairosError as exc:
                self._send_error(exc)
                return
            self._send_whole(status, [("Content-Type", content_type)], body)
        elif self._preflight is not None:
            self._send_whole(204, self._preflight, b"")
        elif self._management:
            self._task = asyncio.get_running_loop().create_task(self._serve_management())
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

    def _reject(self, error: KairosError) -> None:
        """Answer now, before the request body has arrived; Tornado then closes the
        connection rather than read a body nobody wants."""
        self._send_error(error, close=True)

    def _security_headers(self) -> list[tuple[str, str]]:
        snapshot = self.snapshot
        if not snapshot.security_headers:
            return []
        return snapshot.security_headers_https if self._https() else snapshot.security_headers

    def _https(self) -> bool:
        if cast("HTTPRequestContext", self.conn.context).protocol == "https":
            return True
        return (
            self.snapshot.is_trusted_proxy(self.peer_ip)
            and self.request_headers.get("X-Forwarded-Proto", "").lower() == "https"
        )

    def _send_whole(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        close: bool = False,
    ) -> None:
        pairs = [*headers, *self._extra_headers, *self._security_headers()]
        if status != 204:
            pairs.append(("Content-Length", str(len(body))))
        pairs.append(("X-Request-Id", self.request_id))
        if close or self.gateway.draining:
            pairs.append(("Connection", "close"))
        out = fill_headers(pairs)
        self._status = status
        self._bytes_out = len(body)
        start = httputil.ResponseStartLine("HTTP/1.1", status, HTTPStatus(status).phrase)
        self.conn.write_headers(start, out, body if self.method != "HEAD" and body else None)
        self.conn.finish()
        self._complete()

    def _send_error(self, error: KairosError, *, close: bool = False) -> None:
        status, headers, body = problems.render(error, self.request_id)
        self._send_whole(
            status, [("Content-Type", problems.CONTENT_TYPE), *headers], body, close=close
        )

    # -- management API ------------------------------------------------------------

    async def _serve_management(self) -> None:
        request = ApiRequest(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.request_headers,
            body=b"".join(self._body),
            peer_ip=self.peer_ip,
            request_id=self.request_id,
        )
        try:
            response = await self.gateway.management.handle(request)
        except Exception:
            log.exception(
                "management API call failed", extra={"fields": {"request_id": self.request_id}}
            )
            response = ApiResponse.problem(
                KairosError("the gateway failed to handle the request"), self.request_id
            )
        self._send_whole(response.status, response.headers, response.body)

    # -- proxying ------------------------------------------------------------------

    async def _proxy(self, match: Match) -> None:
        runtime = self.snapshot.routes[match.route.index]
        try:
            user: str | None = None
            claim_headers: list[tuple[str, str]] = []
            auth = runtime.auth
            if auth is not None:
                claims = await self._authenticate(auth)
                subject = claims.get("sub")
                user = subject if isinstance(subject, str) else None
                if auth.forward_claims:
                    claim_headers = auth.verifier.forwarded_headers(claims, auth.forward_claims)
            if runtime.limiter is not None:
                await self._rate_limit(runtime, runtime.limiter, user)
            await self._forward(runtime, match, claim_headers)
        except asyncio.CancelledError:
            pass  # the client went away; _client_closed has recorded the exchange
        except KairosError as exc:
            self._send_error(exc)
        except Exception:
            log.exception(
                "unexpected error while proxying", extra={"fields": {"request_id": self.request_id}}
            )
            if self._status == 0:
                self._send_error(KairosError("the gateway failed to handle the request"))
            else:
                self.conn.close()
                self._complete()

    async def _authenticate(self, auth: RouteAuth) -> Claims:
        """The verified claims of the request's bearer token; raises Unauthorized (401)
        or Forbidden (403) with the RFC 6750 challenge. Only the Authorization header
        is read, never the query string."""
        result = auth.verifier.authenticate(self.request_headers.get("Authorization"))
        claims = result if isinstance(result, MappingProxyType) else await result
        if auth.required_claims:
            auth.verifier.check_route_claims(claims, auth.required_claims)
        return claims

    async def _rate_limit(
        self, runtime: RouteRuntime, limiter: RateLimiter, user: str | None
    ) -> None:
        """Count the request against the route's limit; raise when it is refused. The
        RateLimit fields go on whatever response follows, a refusal included."""
        key = limit_key(
            limiter.config.key,
            client_ip=self.client_ip,
            user=user,
            route_template=runtime.route.template,
            headers=self.request_headers,
        )
        decision = limiter.check_nowait(key)
        if decision is None:
            decision = await limiter.check(key)
        fields = limiter.headers(decision)
        if decision.allowed:
            self._extra_headers.extend(fields)
            return
        # Retry-After comes with the error itself.
        self._extra_headers.extend(f for f in fields if f[0] != "Retry-After")
        runtime.stats.rate_limited += 1
        if decision.store_error:
            raise ServiceUnavailable("the rate limiter's store is unavailable")
        raise TooManyRequests("rate limit exceeded", retry_after_s=decision.retry_after_s)

    async def _forward(
        self, runtime: RouteRuntime, match: Match, claim_headers: list[tuple[str, str]]
    ) -> None:
        """Try backends until one answers in a way that is not worth retrying, then relay.

        Each try: pick a backend (skipping unavailable ones and, when possible, those
        already tried), take a breaker permit, count it in flight, send. A failure or a
        retryable status is retried while the retry policy, the route's retry budget
        and the total deadline allow; otherwise a failure becomes a 502/504 problem and
        a response (even a retryable one) is relayed as it is.
        """
        loop = asyncio.get_running_loop()
        deadline = (
            None if runtime.total_timeout_s is None else loop.time() + runtime.total_timeout_s
        )
        if runtime.budget is not None:
            runtime.budget.on_request()
        client_key = self.client_ip if runtime.balancer.uses_client_key else ""
        context = cast("HTTPRequestContext", self.conn.context)
        headers = upstream_request_headers(
            self.request_headers,
            client_ip=self.peer_ip,
            proto=context.protocol,
            request_id=self.request_id,
            trust_forwarded=self.snapshot.is_trusted_proxy(self.peer_ip),
        )
        auth = runtime.auth
        if auth is not None:
            headers = _apply_auth(headers, auth, claim_headers)
        client_host = self.request_headers.get("Host") if runtime.preserve_host else None
        target = match.upstream_path
        if self.query:
            target = f"{target}?{self.query}"
        body = b"".join(self._body) if self._body else b""
        pool = self.gateway.pool
        tried: list[int] = []
        while True:
            index, state, permit = self._pick(runtime, client_key, tried)
            self._backend = state
            connect_timeout = runtime.connect_timeout_s
            read_timeout = runtime.read_timeout_s
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    permit.release()
                    raise UpstreamTimeout("the route's total deadline passed before an answer")
                connect_timeout = min(connect_timeout, remaining)
                read_timeout = min(read_timeout, remaining)
            state.inflight += 1
            sent = perf_counter()
            try:
                response = await pool.request(
                    state.endpoint,
                    self.method,
                    target,
                    [("Host", client_host or state.endpoint.host_header), *headers],
                    body,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                )
            except UpstreamFailure as exc:
                state.inflight -= 1
                permit.failure()
                self._upstream_failed(state, exc)
                if await self._retry(runtime, tried, index, exc.kind, None, deadline):
                    continue
                if isinstance(exc, UpstreamTimedOut):
                    raise UpstreamTimeout("the backend did not answer in time") from exc
                raise UpstreamError("the backend could not be reached or answered badly") from exc
            except BaseException:
                state.inflight -= 1
                permit.release()
                raise
            elapsed = perf_counter() - sent
            state.stats.duration.observe(elapsed)
            state.observe_latency(elapsed, time.monotonic())
            permit.response(response.status)
            status = response.status
            if runtime.retry is not None and runtime.retry.status_retryable(status):
                retry_after = _header(response.headers, "retry-after")
                if await self._retry(
                    runtime, tried, index, f"status_{status}", retry_after, deadline, response
                ):
                    state.inflight -= 1
                    continue
            break
        self._response = response
        try:
            await self._relay(response)
        except UpstreamFailure as exc:
            # Part of the response is already with the client: all that is left is to
            # cut the connection so the client sees an incomplete response.
            self._upstream_failed(state, exc)
            self.conn.close()
            self._complete()
        except StreamClosedError:
            response.abort()
            self._status = CLIENT_CLOSED
            self._complete()
        finally:
            state.inflight -= 1

    def _pick(
        self, runtime: RouteRuntime, client_key: str, tried: list[int]
    ) -> tuple[int, BackendState, Permit]:
        backends = runtime.backends
        exclude: list[int] = list(tried)
        for _ in range(len(backends) + 1):
            index = runtime.balancer.pick(backends, client_key=client_key, exclude=exclude)
            if index is None:
                break
            permit = backends[index].breaker.acquire()
            if permit is not None:
                return index, backends[index], permit
            exclude.append(index)  # lost a half-open probe slot to a concurrent request
        open_breakers = [b.breaker.retry_after_s() for b in backends if b.healthy]
        if open_breakers:
            raise CircuitOpen(
                "every backend of this route has an open circuit breaker",
                retry_after_s=min(open_breakers),
            )
        raise NoHealthyBackend("every backend of this route failed its health checks")

    async def _retry(
        self,
        runtime: RouteRuntime,
        tried: list[int],
        index: int,
        reason: str,
        retry_after: str | None,
        deadline: float | None,
        response: UpstreamResponse | None = None,
    ) -> bool:
        """Decide whether to try again; if so, discard ``response`` and wait the backoff."""
        policy = runtime.retry
        retries = len(tried)
        if (
            policy is None
            or retries >= policy.max_retries
            or not policy.method_allowed(self.method)
        ):
            return False
        if response is None and not policy.retry_on_connection_error:
            return False
        delay = policy.retry_after_s(retry_after) if retry_after is not None else None
        if delay is None:
            delay = policy.backoff_s(retries, self.gateway.rng)
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() + delay >= deadline:
            return False
        # Spend budget last: a retry refused for another reason must not use it up.
        if runtime.budget is not None and not runtime.budget.try_spend():
            runtime.stats.retry("budget_exhausted")
            return False
        if response is not None:
            response.abort()
        tried.append(index)
        runtime.stats.retry(reason)
        if delay > 0:
            await asyncio.sleep(delay)
        return True

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
            response.headers,
            request_id=self.request_id,
            close=self.gateway.draining,
            extra=self._extra_headers,
            defaults=self._security_headers(),
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

    def _upstream_failed(self, state: BackendState, exc: UpstreamFailure) -> None:
        state.stats.error(exc.kind)
        log.warning(
            "upstream request failed",
            extra={
                "fields": {
                    "request_id": self.request_id,
                    "backend": state.address,
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
        backend = self._backend
        self.gateway.access_log.record(
            request_id=self.request_id,
            method=self.method,
            path=self.path,
            route=stats.label if stats is not None else UNMATCHED,
            backend=backend.address if backend is not None else "",
            status=self._status,
            duration_s=duration,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            client=self.client_ip,
        )
        self.gateway.request_finished()


__all__ = ["CLIENT_CLOSED", "Exchange", "OpsHandler"]
