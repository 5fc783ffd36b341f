"""WebSocket proxying: the upgrade flow and the byte relay.

The exchange hands a GET with ``Upgrade: websocket`` on a route that carries
WebSockets (`Router.websocket_config`) to `start` instead of the proxy:

1. Policies. The route's ``on_headers`` phase has run (CORS headers, body limit).
   A route with a CORS policy refuses an ``Origin`` it does not allow (403): browsers
   do not apply CORS to WebSockets, so the gateway checks the origin itself (against
   cross-site WebSocket hijacking). Then ``on_request`` (JWT, rate limit, plugins)
   and ``before_upstream`` run as for any proxied request.
2. Backend. The route's balancer and breaker choose it (`forward._admit`); a failure
   before the backend's answer, or a retryable status, is retried by the route's retry
   policy (the upgrade is a GET: idempotent).
3. Upgrade. `upstream.tunnel.open_tunnel` sends the upgrade request on a connection of
   its own and checks the ``101``. Any other answer reaches the client as a normal
   response; an invalid ``101`` is a 502.
4. Relay. The gateway writes the ``101`` to the client, takes the raw connection from
   Tornado (`HTTP1Connection.detach`) and copies bytes both ways (`Tunnel`), reading
   from one side only while the other takes what it gets (backpressure). When one
   side closes, the other is closed once what was read from the first is written to
   it. The route's idle timeout and maximum lifetime close
   both, and so does the gateway's shutdown once its drain timeout has passed.

The exchange stays in flight until the tunnel ends and is recorded then: status 101,
the bytes relayed each way, the tunnel's duration. The attempt (backend in-flight
count, breaker permit) is held as long.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from kairos_core import (
    BadRequest,
    Forbidden,
    KairosError,
    UpstreamError,
)
from tornado.iostream import StreamClosedError

from .chain import Policy, PolicyFailed, ResponseHead, UpstreamRequest
from .forward import Attempt, Tries
from .headers import client_response_pairs
from .messages import Response
from .respond import CLIENT_CLOSED, Responder
from .upstream import UpstreamError as UpstreamFailure
from .upstream.tunnel import TunnelResponse, open_tunnel

if TYPE_CHECKING:
    from asyncio import Future

    from kairos_core import CompiledRoute, WebSocketConfig
    from tornado.httputil import HTTPHeaders
    from tornado.iostream import IOStream

    from .metrics import WebSocketStats
    from .snapshot import RouteRuntime

__all__ = ["OpenWebSockets", "Tunnel", "carries", "start", "wants_upgrade"]

log = logging.getLogger("kairos.gateway")

#: Most bytes read from one side before they are written to the other.
CHUNK = 64 * 1024


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",")}


def wants_upgrade(method: str, headers: HTTPHeaders) -> bool:
    """Is this request a WebSocket opening handshake (RFC 6455 4.1)?"""
    return (
        method == "GET"
        and "websocket" in _tokens(headers.get("Upgrade"))
        and "upgrade" in _tokens(headers.get("Connection"))
    )


def carries(route: CompiledRoute, method: str, headers: HTTPHeaders) -> bool:
    """Does ``route`` take this request as a WebSocket? (On any other route, the
    ``Upgrade`` header is hop-by-hop and dropped: the request is proxied as plain HTTP.)"""
    return route.config.websocket_config is not None and wants_upgrade(method, headers)


class OpenWebSockets:
    """The tunnels open in this process, so shutdown can close what outlived the drain."""

    def __init__(self) -> None:
        self._open: set[Tunnel] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, tunnel: Tunnel) -> None:
        self._open.add(tunnel)

    def discard(self, tunnel: Tunnel) -> None:
        self._open.discard(tunnel)

    async def close_all(self, timeout_s: float = 2.0) -> None:
        """Close every open tunnel and wait (at most ``timeout_s``) until each has
        been recorded."""
        tunnels = list(self._open)
        for tunnel in tunnels:
            tunnel.close("shutdown")
        waits = [t.finished.wait() for t in tunnels]
        if waits:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=timeout_s
            )
            for task in pending:
                task.cancel()


class _TunnelHost(Protocol):
    websockets: OpenWebSockets


def start(exchange: Responder) -> None:
    """The exchange's handler for an upgrade request on a WebSocket route."""
    exchange._task = asyncio.get_running_loop().create_task(_upgrade(exchange))
    # Until the upgrade, a client that leaves ends the exchange (499) as for any request.
    exchange.conn.set_close_callback(functools.partial(_client_left, exchange))


def _client_left(exchange: Responder) -> None:
    if exchange._done:
        return
    task = exchange._task
    if task is not None and not task.done():
        task.cancel()
    exchange.status = CLIENT_CLOSED
    exchange._complete()


async def _run_phase(
    exchange: Responder, hooks: Iterable[tuple[Policy, Callable[..., Any]]], *args: object
) -> Response | None:
    """Run ``on_request`` or ``before_upstream`` hooks; the first answer, or None."""
    for policy, hook in hooks:
        try:
            answer = hook(exchange, *args)
            if answer is not None and not isinstance(answer, Response):
                answer = await answer
        except KairosError:
            raise
        except Exception as exc:
            raise exchange._policy_failed(policy) from exc
        if answer is not None:
            return cast(Response, answer)
    return None


def _origin_refused(exchange: Responder, route: RouteRuntime) -> KairosError | None:
    cors = route.cors
    origin = exchange.headers.get("Origin")
    if cors is not None and origin is not None and not cors.allows(origin):
        return Forbidden(f"WebSocket connections from origin {origin!r} are not allowed")
    return None


async def _upgrade(exchange: Responder) -> None:
    route = exchange._route
    match = exchange.match
    assert route is not None
    assert match is not None
    config = match.route.config.websocket_config
    assert config is not None
    stats = exchange.host.runtime.metrics.websocket(route.stats.label)
    attempt: Attempt | None = None
    response: TunnelResponse | None = None
    try:
        if "Sec-WebSocket-Key" not in exchange.headers:
            raise BadRequest("a WebSocket upgrade needs a Sec-WebSocket-Key header")
        refusal = _origin_refused(exchange, route)
        if refusal is not None:
            raise refusal
        chain = route.chain
        answer = await _run_phase(exchange, chain.on_request)
        if answer is None:
            upstream = _upstream_request(exchange, route, match.upstream_path)
            answer = await _run_phase(exchange, chain.before_upstream, upstream)
        if answer is not None:
            stats.answered(answer.status)
            exchange._send(answer)
            return
        attempt, response = await _connect(exchange, route, upstream)
        exchange._attempt = attempt
        if response.status != 101:
            stats.answered(response.status)
            attempt.close()
            _relay_refusal(exchange, response)
            return
        head = _switching_head(exchange, response)
        stream = exchange.conn.detach()
        exchange.status = 101
        tunnel = Tunnel(exchange, attempt, stream, response, config, stats)
        attempt = response = None  # the tunnel owns them now
        await tunnel.run(head)
    except asyncio.CancelledError:
        pass  # the client left before the upgrade; _client_left recorded it
    except KairosError as exc:
        if exchange.status == 0:
            stats.answered(exc.status)
            exchange._send_error(exc, close=True, hooks=not isinstance(exc, PolicyFailed))
    except Exception:
        error = exchange._unexpected("unexpected error while opening a WebSocket")
        if exchange.status == 0:
            stats.answered(error.status)
            exchange._send_error(error, close=True, hooks=False)
    finally:
        if response is not None:
            response.abort()
        if attempt is not None:
            attempt.close()


def _upstream_request(exchange: Responder, route: RouteRuntime, target: str) -> UpstreamRequest:
    """The upgrade request for the backend: the usual forwarded headers, hop-by-hop
    ones dropped, then the upgrade's own (Sec-WebSocket-* pass as end-to-end)."""
    headers = exchange.upstream_headers(propagate=False)
    headers += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
    return UpstreamRequest(
        f"{target}?{exchange.query}" if exchange.query else target,
        headers,
        b"",
        exchange.headers.get("Host") if route.preserve_host else None,
    )


async def _connect(
    exchange: Responder, route: RouteRuntime, upstream: UpstreamRequest
) -> tuple[Attempt, TunnelResponse]:
    """Try backends as `forward.forward` does (`forward.Tries`), with a connection of
    the upgrade's own; return the answer that is not retried, with its open attempt."""
    tries = Tries(
        route,
        method="GET",
        client_ip=exchange.client_ip,
        request_id=exchange.request_id,
        rng=exchange.host.runtime.rng,
    )
    while True:
        attempt, connect_timeout, read_timeout = tries.start()
        endpoint = attempt.state.endpoint
        try:
            response = await open_tunnel(
                endpoint,
                upstream.target,
                [("Host", upstream.host or endpoint.host_header), *upstream.headers],
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
        except UpstreamFailure as exc:
            await tries.after_failure(attempt, exc)
            continue
        except BaseException:
            attempt.close()
            raise
        attempt.answered(response.status)
        pause = tries.retry_status(attempt, response.status, response.headers)
        if pause is not None:
            attempt.close()  # a refusal's connection is closed already
            if pause > 0:
                await asyncio.sleep(pause)
            continue
        return attempt, response


def _relay_refusal(exchange: Responder, response: TunnelResponse) -> None:
    """The backend answered the upgrade with something else than 101: pass it on."""
    pairs = [
        (name, value)
        for name, value in client_response_pairs(response.headers)
        if name.lower() != "content-length"
    ]
    exchange._send_whole(response.status, pairs, response.body, close=True)


def _switching_head(exchange: Responder, response: TunnelResponse) -> bytes:
    """The ``101`` for the client: the backend's end-to-end headers (the accept key,
    subprotocol, extensions, cookies), the policies' headers, and the upgrade's."""
    pairs = client_response_pairs(response.headers, exchange.response_headers)
    if exchange.chain.on_response:
        head = ResponseHead(101, response.reason or "Switching Protocols", pairs)
        exchange._run_on_response(head)
        pairs = head.headers
    present = {name.lower() for name, _ in pairs}
    pairs += [(n, v) for n, v in exchange._defaults if n.lower() not in present]
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade"]
    for name, value in pairs:
        if name.lower() in ("content-length", "x-request-id"):
            continue
        if "\r" in value or "\n" in value:
            raise UpstreamError("a response header holds a line break")
        lines.append(f"{name}: {value}")
    lines.append(f"X-Request-Id: {exchange.request_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Tunnel:
    """One open WebSocket: the client's stream and the backend's, relayed both ways.

    Client to backend is a loop reading the client's `IOStream` and writing to the
    backend's transport, waiting whenever the transport's buffer is full. Backend to
    client runs in the backend protocol's ``data_received``: each chunk is written to
    the client's stream at once, and reading from the backend pauses until a write the
    stream could not finish at once is done. Owns the attempt and the backend
    connection; `run` returns once both sides are closed, with everything released and
    the exchange recorded.
    """

    __slots__ = (
        "_attempt",
        "_backend",
        "_backend_gone",
        "_config",
        "_exchange",
        "_idle",
        "_last",
        "_lifetime",
        "_loop",
        "_opened",
        "_pending",
        "_stats",
        "_stream",
        "bytes_down",
        "bytes_up",
        "closed_by",
        "finished",
    )

    def __init__(
        self,
        exchange: Responder,
        attempt: Attempt,
        stream: IOStream,
        response: TunnelResponse,
        config: WebSocketConfig,
        stats: WebSocketStats,
    ) -> None:
        self._exchange = exchange
        self._attempt = attempt
        self._stream = stream
        self._backend = response.protocol
        self._config = config
        self._stats = stats
        self._loop = loop = asyncio.get_running_loop()
        self._last = self._opened = loop.time()
        self._idle: asyncio.TimerHandle | None = None
        self._lifetime: asyncio.TimerHandle | None = None
        #: The client write the backend's reading waits for (None: not paused).
        self._pending: Future[None] | None = None
        self._backend_gone = asyncio.Event()
        self.bytes_up = 0
        self.bytes_down = 0
        #: What ended the tunnel first: client, backend, idle, lifetime, shutdown, error.
        self.closed_by = ""
        self.finished = asyncio.Event()

    async def run(self, head: bytes) -> None:
        """Send the client ``head`` (the 101), then relay until both sides are closed."""
        loop = self._loop
        host = cast(_TunnelHost, self._exchange.host)
        host.websockets.add(self)
        self._stats.opened()
        self._idle = loop.call_at(self._last + self._config.idle_timeout_s, self._check_idle)
        if self._config.max_lifetime_s is not None:
            self._lifetime = loop.call_later(self._config.max_lifetime_s, self.close, "lifetime")
        try:
            try:
                await self._stream.write(head)
            except StreamClosedError:
                self.close("client")
                return
            self._backend.relay(self._down, self._backend_lost)
            await self._up()
            await self._backend_gone.wait()
        except BaseException:
            self.close("error")
            raise
        finally:
            self._finish(host)

    def close(self, by: str) -> None:
        """End the tunnel now (idle, lifetime, shutdown): both connections closed."""
        self._ended(by)
        self._stream.close()
        self._backend.abort()

    def _ended(self, by: str) -> None:
        if not self.closed_by:
            self.closed_by = by

    def _check_idle(self) -> None:
        due = self._last + self._config.idle_timeout_s
        if self._loop.time() >= due:
            self._idle = None
            self.close("idle")
        else:
            self._idle = self._loop.call_at(due, self._check_idle)

    async def _up(self) -> None:
        """Client -> backend, until the client closes (then the backend connection is
        closed once what was read is sent) or the backend is gone."""
        stream, backend, loop = self._stream, self._backend, self._loop
        try:
            while not backend.lost:
                data = await stream.read_bytes(CHUNK, partial=True)
                self.bytes_up += len(data)
                self._last = loop.time()
                backend.write(data)
                writable = backend.writable
                if writable is not None:
                    await writable
        except StreamClosedError:
            self._ended("client")
        finally:
            backend.close()

    def _down(self, data: bytes) -> None:
        """Backend -> client, one chunk (called by the backend's protocol)."""
        self.bytes_down += len(data)
        self._last = self._loop.time()
        try:
            written = self._stream.write(data)
        except StreamClosedError:
            self.close("client")
            return
        if not written.done():
            # The client's socket is full: read no more from the backend until the
            # stream has sent this.
            self._pending = written
            self._backend.pause_reading()
            written.add_done_callback(self._client_drained)

    def _client_drained(self, written: Future[None]) -> None:
        if written.exception() is not None:
            self.close("client")
        elif written is self._pending:
            self._pending = None
            self._backend.resume_reading()

    def _backend_lost(self) -> None:
        """The backend connection is gone: close the client once it has what was sent."""
        self._ended("backend")
        self._backend_gone.set()
        pending = self._pending
        if pending is None or pending.done():
            self._stream.close()
        else:
            pending.add_done_callback(lambda _: self._stream.close())

    def _finish(self, host: _TunnelHost) -> None:
        for handle in (self._idle, self._lifetime):
            if handle is not None:
                handle.cancel()
        self._backend.abort()
        self._stream.close()
        self._attempt.close()
        host.websockets.discard(self)
        duration = self._loop.time() - self._opened
        self._stats.ended(self.closed_by or "error", duration, self.bytes_up, self.bytes_down)
        exchange = self._exchange
        exchange.bytes_in += self.bytes_up
        exchange.bytes_out += self.bytes_down
        if self.closed_by == "client" and exchange.status == 0:
            exchange.status = CLIENT_CLOSED
        exchange._complete()
        self.finished.set()
        log.debug(
            "websocket closed",
            extra={
                "fields": {
                    "request_id": exchange.request_id,
                    "closed_by": self.closed_by,
                    "duration_s": round(duration, 3),
                }
            },
        )
