"""One client request, from its headers to the last byte of the response.

`Exchange` is Tornado's `HTTPMessageDelegate` for a single request. When the headers
arrive it chooses one handler (a gateway endpoint, the management API, a CORS
preflight, the proxy, or an error) and runs the ``on_headers`` phase of the chain
that applies; `finish()` then calls that handler, nothing else. The proxy handler runs
in one task: the ``on_request`` and ``before_upstream`` phases, the forwarding step
(`forward`), and the relay of the response through ``on_response`` / ``on_chunk``.

Metrics, the access-log line and the ``on_complete`` phase happen exactly once, however
the exchange ends (response sent, client gone, upstream failure). The exchange is also
the `chain.Request` that policies see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol, cast

from kairos_core import (
    MAX_BODY_LIMIT,
    RESERVED_PATHS,
    RESERVED_PREFIXES,
    BadPath,
    BadRequest,
    HeadersTooLarge,
    InvalidPath,
    KairosError,
    Match,
    MethodNotAllowed,
    MethodNotAllowedResult,
    PayloadTooLarge,
    RouteNotFound,
)
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.iostream import StreamClosedError

from . import problems
from .chain import EMPTY_CHAIN, Chain, Policy, PolicyFailed, ResponseHead, UpstreamRequest
from .forward import Attempt, forward
from .headers import (
    client_address,
    client_response_headers,
    client_response_pairs,
    complete_response_headers,
    fill_headers,
    request_id_from,
    upstream_request_headers,
)
from .messages import MAX_API_BODY, ApiRequest, ApiResponse, OpsHandler, Response
from .metrics import MANAGEMENT, UNMATCHED, RouteStats
from .upstream import UpstreamError as UpstreamFailure
from .upstream import UpstreamResponse

if TYPE_CHECKING:
    from kairos_core import CompiledRoute
    from tornado.httpserver import _HTTPRequestContext as HTTPRequestContext

    from .accesslog import AccessLog
    from .runtime import Runtime
    from .snapshot import RouteRuntime, Snapshot

__all__ = ["CLIENT_CLOSED", "Exchange", "Host"]

log = logging.getLogger("kairos.gateway")

# Status recorded when the client disconnects before its response was complete
# (nginx's convention; never sent on the wire).
CLIENT_CLOSED = 499

_OPS_METHODS = frozenset({"GET", "HEAD"})


class Host(Protocol):
    """What an exchange needs from the process serving it (the app's `Gateway`)."""

    runtime: Runtime
    ops: Mapping[str, OpsHandler]
    access_log: AccessLog
    #: Connections waiting for their next request, with the loop time they began.
    waiting: dict[HTTP1ServerConnection, float]
    draining: bool
    max_header_size: int

    @property
    def has_admin_listener(self) -> bool: ...
    async def handle_management(self, request: ApiRequest) -> ApiResponse: ...
    def request_started(self) -> None: ...
    def request_finished(self) -> None: ...


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than this route accepts ({limit} bytes)")


def header_bytes(headers: httputil.HTTPHeaders) -> int:
    """Size of the header block as received, near enough (names, values, separators)."""
    return sum(len(name) + len(value) + 4 for name, value in headers.get_all())


def _reserved(path: str) -> bool:
    if path in RESERVED_PATHS:
        return True
    return any(path == root or path.startswith(root + "/") for root in RESERVED_PREFIXES)


def _has_body(headers: httputil.HTTPHeaders) -> bool:
    length = headers.get("Content-Length")
    return (length is not None and length != "0") or "Transfer-Encoding" in headers


class Exchange(httputil.HTTPMessageDelegate):
    __slots__ = (
        "_admin_listener",
        "_attempt",
        "_body",
        "_body_limit",
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
        conn: HTTP1Connection,
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
        self._keep_body = False
        self._body_limit = MAX_BODY_LIMIT
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = 0
        #: The handler `finish()` calls, chosen when the headers arrived. A function of
        #: the class, not a bound method: that would tie the exchange in a reference
        #: cycle and leave every request's objects to the cyclic garbage collector.
        self._respond: Callable[[Exchange], None] = Exchange._answer_error
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
    def duration_s(self) -> float:
        return self._duration if self._done else perf_counter() - self._started

    @property
    def backend(self) -> str:
        attempt = self._attempt
        return "" if attempt is None else attempt.state.address

    def add_default_headers(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._defaults = pairs if not self._defaults else [*self._defaults, *pairs]

    def limit_body(self, max_bytes: int) -> None:
        self._body_limit = max_bytes
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) <= max_bytes:
            return
        # Tornado would answer a body over its own limit with a bare 400 of its own.
        self.conn.set_max_body_size(int(length))
        raise _too_large(max_bytes)

    # -- HTTPMessageDelegate -------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        host = self.host
        host.waiting.pop(self.server_conn, None)
        start_line = cast(httputil.RequestStartLine, start_line)
        self.method = method = start_line.method
        self.headers = headers
        self.request_id = request_id_from(headers)
        self.peer_ip = cast("HTTPRequestContext", self.conn.context).remote_ip
        self.snapshot = snapshot = host.runtime.snapshot
        self.client_ip = (
            client_address(self.peer_ip, headers, snapshot)
            if snapshot.trusted_proxies
            else self.peer_ip
        )
        path, _, self.query = start_line.path.partition("?")
        self.path = path
        host.request_started()
        self._started = perf_counter()

        if header_bytes(headers) > host.max_header_size:
            self._stats = host.runtime.metrics.route(UNMATCHED)
            self.chain = snapshot.endpoint_chain
            self._on_headers()
            if not self._done:
                self._reject(HeadersTooLarge("the request headers are too large"))
            return
        ops = host.ops.get(path)
        if ops is not None:
            self._endpoint(path)
            if method in _OPS_METHODS:
                self._ops = ops
                self._respond = Exchange._answer_ops
            else:
                self._error = MethodNotAllowed(f"{method} is not allowed", allow=_OPS_METHODS)
            self._on_headers()
            return
        if path.startswith("/api/") and _reserved(path):
            # The management API: always the gateway's, never proxied, so a route such
            # as /api/{*rest} cannot capture it.
            if host.has_admin_listener and not self._admin_listener:
                # admin.listen is set: the API answers on the admin listener only.
                self._miss(RouteNotFound(f"no route for {path}"))
                return
            self._endpoint(MANAGEMENT)
            self._keep_body = True
            self._respond = Exchange._call_management
            self._on_headers()
            if not self._done:
                try:
                    self.limit_body(MAX_API_BODY)
                except KairosError as exc:
                    self._reject(exc)
            return
        if self._admin_listener:
            # The admin listener serves the gateway's endpoints, never routes.
            self._miss(RouteNotFound(f"no management endpoint at {path}"))
            return
        if not path.startswith("/"):
            self._miss(BadRequest("the request target must be a path starting with '/'"))
            return
        if method == "OPTIONS" and "Origin" in headers:
            requested = headers.get("Access-Control-Request-Method")
            if requested and self._preflight_of(requested):
                return
        result = snapshot.table.match(method, path)
        if isinstance(result, Match):
            self.match = result
            self._route = route = snapshot.routes[result.route.index]
            self._stats = route.stats
            self.chain = route.chain
            self._keep_body = True
            self._respond = Exchange._start_proxy
            self._on_headers()
        elif isinstance(result, MethodNotAllowedResult):
            self._miss(MethodNotAllowed(f"{method} is not allowed", allow=result.allow))
        elif isinstance(result, BadPath):
            self._miss(InvalidPath(result.reason))
        else:
            self._miss(RouteNotFound(f"no route for {path}"))

    def data_received(self, chunk: bytes) -> None:
        if self._done:
            return
        self.bytes_in += len(chunk)
        if self._keep_body:
            if self.bytes_in > self._body_limit:
                self._keep_body = False
                self._body.clear()
                self._reject(_too_large(self._body_limit))
                return
            self._body.append(chunk)

    def finish(self) -> None:
        if not self._done:  # else answered early (413, 431) while the request arrived
            self._respond(self)

    def on_connection_close(self) -> None:
        # The client went away before it finished sending the request.
        self.host.waiting.pop(self.server_conn, None)
        if self._started:
            self.status = CLIENT_CLOSED
            self._complete()

    # -- choosing the handler ------------------------------------------------------

    def _endpoint(self, label: str) -> None:
        self._stats = self.host.runtime.metrics.route(label)
        self.chain = self.snapshot.endpoint_chain

    def _miss(self, error: KairosError) -> None:
        """No route serves the request: answer ``error`` when it has arrived."""
        self._error = error
        self._stats = self.host.runtime.metrics.route(UNMATCHED)
        self.chain = self.snapshot.miss_chain
        self._on_headers()

    def _preflight_of(self, requested_method: str) -> bool:
        """Answer a CORS preflight if a route with a CORS policy serves
        ``requested_method`` on this path."""
        snapshot = self.snapshot
        result = snapshot.table.match(requested_method.strip().upper(), self.path)
        if not isinstance(result, Match):
            return False
        route = snapshot.routes[result.route.index]
        cors = route.cors
        if cors is None:
            return False
        self._stats = route.stats
        self.chain = snapshot.endpoint_chain
        self._preflight = cors.preflight_headers(
            self.headers["Origin"], self.headers.get("Access-Control-Request-Headers")
        )
        self._respond = Exchange._answer_preflight
        self._on_headers()
        return True

    def _on_headers(self) -> None:
        """Run the chain's ``on_headers`` phase; an answer (or a refusal) is sent now,
        before the body is read."""
        policy: Policy | None = None
        try:
            for policy, hook in self.chain.on_headers:  # noqa: B007 (read in except)
                answer = hook(self)
                if answer is not None:
                    self._send(answer, close=_has_body(self.headers))
                    return
        except KairosError as exc:
            self._reject(exc)
        except Exception:
            assert policy is not None
            self._reject(self._policy_failed(policy))

    # -- handlers ------------------------------------------------------------------

    def _answer_error(self) -> None:
        self._send_error(self._error or RouteNotFound("no route"))

    def _answer_preflight(self) -> None:
        self._send_whole(204, self._preflight, b"")

    def _answer_ops(self) -> None:
        assert self._ops is not None
        try:
            status, content_type, body = self._ops(self._api_request())
        except KairosError as exc:
            self._send_error(exc)
            return
        self._send_whole(status, [("Content-Type", content_type)], body)

    def _call_management(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._management())

    def _start_proxy(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._proxy())
        self.conn.set_close_callback(self._client_closed)

    def _api_request(self) -> ApiRequest:
        return ApiRequest(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.headers,
            body=b"".join(self._body),
            peer_ip=self.peer_ip,
            request_id=self.request_id,
        )

    async def _management(self) -> None:
        try:
            response = await self.host.handle_management(self._api_request())
        except Exception:
            log.exception(
                "management API call failed", extra={"fields": {"request_id": self.request_id}}
            )
            response = ApiResponse.problem(
                KairosError("the gateway failed to handle the request"), self.request_id
            )
        self._send(response)

    # -- the proxy -----------------------------------------------------------------

    async def _proxy(self) -> None:
        route = self._route
        match = self.match
        assert route is not None
        assert match is not None
        chain = route.chain
        policy: Policy | None = None
        try:
            for policy, hook in chain.on_request:  # noqa: B007 (read in except)
                answer = hook(self)
                if answer is not None:
                    if not isinstance(answer, Response):
                        answer = await answer
                    if answer is not None:
                        self._send(answer)
                        return
            context = cast("HTTPRequestContext", self.conn.context)
            target = match.upstream_path
            upstream = UpstreamRequest(
                f"{target}?{self.query}" if self.query else target,
                upstream_request_headers(
                    self.headers,
                    client_ip=self.peer_ip,
                    proto=context.protocol,
                    request_id=self.request_id,
                    trust_forwarded=self.snapshot.is_trusted_proxy(self.peer_ip),
                ),
                b"".join(self._body) if self._body else b"",
                self.headers.get("Host") if route.preserve_host else None,
            )
            for policy, hook in chain.before_upstream:  # noqa: B007 (read in except)
                answer = hook(self, upstream)
                if answer is not None:
                    if not isinstance(answer, Response):
                        answer = await answer
                    if answer is not None:
                        self._send(answer)
                        return
            policy = None
            pool = self.host.runtime.pool
            attempt, response = await forward(
                route,
                upstream,
                method=self.method,
                client_ip=self.client_ip,
                request_id=self.request_id,
                pool=pool,
                rng=self.host.runtime.rng,
            )
            self._attempt = attempt
            self._response = response
            try:
                await self._relay(attempt, response)
            except BaseException:
                response.abort()
                raise
            finally:
                attempt.close()
        except asyncio.CancelledError:
            pass  # the client went away; _client_closed has recorded the exchange
        except KairosError as exc:
            if self.status == 0:
                # A policy that failed on the response is not asked about this one.
                self._send_error(exc, hooks=not isinstance(exc, PolicyFailed))
            else:
                self._cut()
        except Exception:
            error = (
                self._policy_failed(policy)
                if policy is not None
                else self._unexpected("unexpected error while proxying")
            )
            if self.status == 0:
                self._send_error(error, hooks=False)
            else:
                self._cut()

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
                status, reason, client_response_pairs(response.headers, self.response_headers)
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

    def _client_closed(self) -> None:
        if self._done:
            return
        response = self._response
        if response is not None:
            response.abort()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        self.status = CLIENT_CLOSED
        self._complete()

    # -- responses -----------------------------------------------------------------

    def _reject(self, error: KairosError) -> None:
        """Answer now, before the request body has arrived; Tornado then closes the
        connection rather than read a body nobody wants."""
        self._send_error(error, close=True)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self._send_whole(response.status, response.headers, response.body, close=close)

    def _send_error(self, error: KairosError, *, close: bool = False, hooks: bool = True) -> None:
        status, headers, body = problems.render(error, self.request_id)
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
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
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
        present = {name.lower() for name, _ in pairs} if self._defaults else ()
        pairs += [(n, v) for n, v in self._defaults if n.lower() not in present]
        if status != 204:
            pairs.append(("Content-Length", str(len(body))))
        pairs.append(("X-Request-Id", self.request_id))
        if close or self.host.draining:
            pairs.append(("Connection", "close"))
        self.status = status
        self.bytes_out = len(body)
        start = httputil.ResponseStartLine("HTTP/1.1", status, reason)
        self.conn.write_headers(
            start, fill_headers(pairs), body if self.method != "HEAD" and body else None
        )
        self.conn.finish()
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
        stats = self._stats
        if stats is not None:
            stats.record(self.method, self.status, duration, self.bytes_in, self.bytes_out)
        host = self.host
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
        )
        for policy, hook in self.chain.on_complete:
            try:
                hook(self)
            except Exception:
                self._policy_failed(policy)
        host.request_finished()
