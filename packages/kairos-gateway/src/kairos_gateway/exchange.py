"""One client request, from its headers to the last byte of the response.

`Exchange` is Tornado's `HTTPMessageDelegate` for a single request. When the headers
arrive it chooses one handler (a gateway endpoint, the management API, a CORS
preflight, the proxy, or an error) and runs the ``on_headers`` phase of the chain
that applies; `finish()` then calls that handler, nothing else. The proxy handler runs
in one task: the ``on_request`` and ``before_upstream`` phases, the forwarding step
(`forward`), and the relay of the response (`respond.Responder`, which also holds the
exchange's state, writes every response and records the exchange once).

A request body that fits the route's read-ahead buffer (``request_buffer_size``, with a
Content-Length) is read whole and the proxy task starts at `finish()`. A larger or
chunked body streams: the proxy task starts when the headers are in, and the body goes
upstream through a `body.RequestBody` as it arrives, Tornado's reading of the client
paused whenever the backend falls behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
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
)
from tornado import httputil

from . import websocket
from .body import BodyFailed, RequestBody
from .chain import MaybeAsync, Policy, PolicyFailed, UpstreamRequest
from .forward import forward
from .headers import client_address, request_id_from
from .http1 import head_problem
from .messages import (
    MAX_API_BODY,
    ApiRequest,
    ApiResponse,
    Response,
    StreamedResponse,
)
from .metrics import MANAGEMENT, UNMATCHED
from .respond import CLIENT_CLOSED, Host, Responder, body_too_large

if TYPE_CHECKING:
    from tornado.httpserver import _HTTPRequestContext as HTTPRequestContext

    from .metrics import RouteStats

__all__ = ["CLIENT_CLOSED", "Exchange", "Host"]

log = logging.getLogger("kairos.gateway")

_OPS_METHODS = frozenset({"GET", "HEAD"})
#: What a policy hook may return besides None or an awaitable of one of these.
_ANSWERS = (Response, StreamedResponse)


def _reserved(path: str) -> bool:
    if path in RESERVED_PATHS:
        return True
    return any(path == root or path.startswith(root + "/") for root in RESERVED_PREFIXES)


#: What an access-log line keeps of a refused, overlong path.
_LOGGED_PATH = 1024


def _has_body(headers: httputil.HTTPHeaders) -> bool:
    length = headers.get("Content-Length")
    return (length is not None and length != "0") or "Transfer-Encoding" in headers


def _streamed(headers: httputil.HTTPHeaders, buffer_size: int) -> tuple[bool, int | None]:
    """Does the body stream upstream, and with which length (None: chunked)? It does not
    when there is none or it fits ``buffer_size``: then it is read whole first."""
    if "Transfer-Encoding" in headers:
        return True, None
    length = headers.get("Content-Length")
    if length is None or not length.isdigit():
        return False, None  # none; an invalid one is Tornado's to refuse
    size = int(length)
    return size > buffer_size, size


class Exchange(Responder):
    __slots__ = ()

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
        tracer = host.tracer
        if tracer is not None:
            self.trace = tracer.begin(method, headers)
        self.peer_ip = cast("HTTPRequestContext", self.conn.context).remote_ip
        self.snapshot = snapshot = host.runtime.snapshot
        self.client_ip = (
            client_address(self.peer_ip, headers, snapshot)
            if snapshot.trusted_proxies
            else self.peer_ip
        )
        target = start_line.path
        path, _, self.query = target.partition("?")
        self.path = path
        host.request_started()
        self._started = perf_counter()

        refusal = head_problem(start_line.version, target, headers, host.max_header_size)
        if refusal is not None:
            if len(path) > _LOGGED_PATH:
                self.path = path[:_LOGGED_PATH] + "..."  # the access log line stays small
            self._stats = host.runtime.metrics.route(UNMATCHED)
            self.chain = snapshot.endpoint_chain
            self._on_headers()
            if not self._done:
                self._reject(refusal)
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
            if "Upgrade" in headers and websocket.carries(result.route, method, headers):
                self._respond = websocket.start
            self._on_headers()
            if not self._done and not route.chain.needs_body:
                streams, length = _streamed(headers, route.request_buffer_size)
                if streams:
                    self._stream_body(length, route.request_buffer_size, route.replay_buffer_size)
        elif isinstance(result, MethodNotAllowedResult):
            # The path is a route's: the refusal counts as that route's traffic.
            owner = result.route
            self._miss(
                MethodNotAllowed(f"{method} is not allowed", allow=result.allow),
                None if owner is None else snapshot.routes[owner.index].stats,
            )
        elif isinstance(result, BadPath):
            self._miss(InvalidPath(result.reason))
        else:
            self._miss(RouteNotFound(f"no route for {path}"))

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._done:
            return None
        self.bytes_in += len(chunk)
        stream = self._body_stream
        if stream is not None:
            if self.bytes_in > self._body_limit:
                self.refuse_body(body_too_large(self._body_limit))
                return None
            return stream.feed(chunk)
        if self._keep_body:
            if self.bytes_in > self._body_limit:
                self._keep_body = False
                self._body.clear()
                self._reject(body_too_large(self._body_limit))
                return None
            self._body.append(chunk)
        return None

    def refuse_body(self, error: KairosError) -> None:
        """The request body broke HTTP/1.1's framing (see http1.py) or a streamed one
        outgrew its limit: answer ``error``, or cut the connection if a response has
        begun (it cannot say so any more); the connection closes."""
        if self._done:
            return
        self._stop_proxy()
        if self.status == 0:
            self._reject(error)
        else:
            self._cut()

    def finish(self) -> None:
        if not self._done:  # else answered early (413, 431) while the request arrived
            self._respond(self)

    def on_connection_close(self) -> None:
        # The client went away before it finished sending the request.
        self.host.waiting.pop(self.server_conn, None)
        if self._started:
            self._client_closed()

    # -- choosing the handler ------------------------------------------------------

    def _endpoint(self, label: str) -> None:
        self._stats = self.host.runtime.metrics.route(label)
        self.chain = self.snapshot.endpoint_chain

    def _miss(self, error: KairosError, stats: RouteStats | None = None) -> None:
        """No route serves the request: answer ``error`` when it has arrived, recorded
        under ``stats`` (a route's, for a 405 on its path), else as unmatched."""
        self._error = error
        self._stats = stats if stats is not None else self.host.runtime.metrics.route(UNMATCHED)
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
        hooks = self.chain.on_request
        skip = 0
        pending: MaybeAsync = None
        if hooks and self._body_stream is None:
            # The ``on_request`` hooks run here until one must wait: an answer given
            # at once (a cache hit) is sent without starting a task for the request.
            for policy, hook in hooks:
                skip += 1
                try:
                    pending = hook(self)
                except KairosError as exc:
                    self._send_error(exc, hooks=not isinstance(exc, PolicyFailed))
                    return
                except Exception:
                    self._send_error(self._policy_failed(policy), hooks=False)
                    return
                if isinstance(pending, Response):
                    self._send(pending)
                    return
                if pending is not None:
                    break
        self._task = asyncio.get_running_loop().create_task(self._proxy(skip, pending))
        self.conn.set_close_callback(self._client_closed)

    def _stream_body(self, length: int | None, buffer_size: int, replay_size: int) -> None:
        """Start the proxy now; the body follows it upstream as it arrives."""
        self._body_stream = RequestBody(length, buffer_size=buffer_size, replay_size=replay_size)
        self._keep_body = False
        self._respond = Exchange._end_body
        self._start_proxy()

    def _end_body(self) -> None:
        assert self._body_stream is not None
        self._body_stream.end()

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
        if isinstance(response, StreamedResponse):
            self.conn.set_close_callback(self._client_closed)
            await self._send_streamed(response)
            return
        self._send(response)

    # -- the proxy -----------------------------------------------------------------

    async def _proxy(self, skip: int = 0, pending: MaybeAsync = None) -> None:
        """The proxy task. ``skip``: ``on_request`` hooks `_start_proxy` already ran,
        the last of which returned ``pending`` (an answer to send or to wait for)."""
        route = self._route
        match = self.match
        assert route is not None
        assert match is not None
        chain = route.chain
        hooks = chain.on_request
        policy: Policy | None = None
        try:
            if pending is not None:
                policy = hooks[skip - 1][0]
                answer = pending if isinstance(pending, _ANSWERS) else await pending
                if answer is not None:
                    await self._answer(answer)
                    return
            for policy, hook in hooks[skip:] if skip else hooks:  # noqa: B007 (read in except)
                answer = hook(self)
                if answer is not None:
                    if not isinstance(answer, _ANSWERS):
                        answer = await answer
                    if answer is not None:
                        await self._answer(answer)
                        return
            target = match.upstream_path
            stream = self._body_stream
            trace = self.trace
            body: bytes | RequestBody = b"".join(self._body) if self._body else b""
            if stream is not None:
                body = stream
                if stream.length is None:
                    # A chunked body that turns out small goes with a Content-Length.
                    whole = await stream.whole_if_small()
                    if whole is not None:
                        body = whole
            upstream = UpstreamRequest(
                f"{target}?{self.query}" if self.query else target,
                self.upstream_headers(),
                body,
                self.headers.get("Host") if route.preserve_host else None,
            )
            for policy, hook in chain.before_upstream:  # noqa: B007 (read in except)
                answer = hook(self, upstream)
                if answer is not None:
                    if not isinstance(answer, _ANSWERS):
                        answer = await answer
                    if answer is not None:
                        await self._answer(answer)
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
                trace=trace,
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
        except BodyFailed:
            # The client's body broke off (the exchange has ended, or is about to).
            if self._done:
                pass
            elif self.status == 0:
                self._send_error(BadRequest("the request body did not arrive whole"))
            else:
                self._cut()
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

    async def _answer(self, answer: Response | StreamedResponse) -> None:
        """Send a policy's early answer, whole or streamed."""
        if isinstance(answer, StreamedResponse):
            await self._send_streamed(answer)
        else:
            self._send(answer)

    def _client_closed(self) -> None:
        if self._done:
            return
        self._stop_proxy()
        self.status = CLIENT_CLOSED
        self._complete()

    def _stop_proxy(self) -> None:
        """End the proxy task, whatever it is doing (the exchange ends otherwise)."""
        response = self._response
        if response is not None:
            response.abort()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
