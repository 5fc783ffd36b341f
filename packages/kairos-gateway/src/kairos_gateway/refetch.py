"""A proxied request sent again later as a ``GET`` (`chain.Request.replay`): the cache's
background revalidation (RFC 5861 ``stale-while-revalidate``).

A client answered at once from a stale entry leaves the cache to refresh it. That
refresh is the client's request replayed as a ``GET`` through the route, exactly as a
miss would go: the upstream headers the proxy builds (forwarding headers, request id,
trace context), the chain's ``before_upstream`` hooks (header and path transforms,
credentials a plugin adds, the cache's own validators), then `forward.forward` (the
route's balancer, breakers, retries and timeouts; a try span under the client
request's trace). The ``on_response`` hooks do not run: what is stored is the
backend's response, and the response-side policies apply when it is served, as for
any hit.

`Replay` is made while the exchange is live (`Responder.replay`); its `Replay.fetch`
runs later, in a task of the cache's (bounded there, cancelled when the gateway stops).
Policies see it through the `chain.Replayed` protocol, so they do not import the
proxy's modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .chain import Fetched, UpstreamRequest
from .forward import forward
from .messages import Response, StreamedResponse

if TYPE_CHECKING:
    pass

__all__ = ["Replay"]

#: Request headers of the client that are not the cache's to send: its conditionals
#: and ranges concern its own copy, the refresh is for the whole stored response.
_CLIENT_ONLY = frozenset(
    {
        "if-none-match",
        "if-modified-since",
        "if-match",
        "if-unmodified-since",
        "if-range",
        "range",
    }
)


class Replay:
    """The client request as the ``before_upstream`` hooks of a background revalidation
    see it: a ``GET``, with a copy of the policies' state (the cache's own replaced by
    the revalidation's) and response headers of its own; everything else is the
    client request's."""

    def __init__(self, exchange: Any, state: dict[str, Any]) -> None:
        # ``exchange`` is the `respond.Responder` (not imported: it imports this).
        self._exchange = exchange
        self.state = state
        self.response_headers: list[tuple[str, str]] = []
        self.method = "GET"
        self.status = 0
        #: Read now: the client's connection may be gone when the hooks run.
        self.peer_certificate = exchange.peer_certificate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exchange, name)

    def add_default_headers(self, pairs: Sequence[tuple[str, str]]) -> None:
        return None  # no response of this request reaches a client

    def limit_body(self, max_bytes: int) -> None:
        return None  # a GET without a body

    def replay(self, state: dict[str, Any]) -> Replay:
        return Replay(self._exchange, state)

    async def fetch(self, max_bytes: int) -> Fetched | None:
        """Send it upstream like the proxy sends a miss and read the whole answer (at
        most ``max_bytes`` of body). None when a ``before_upstream`` hook answered
        instead; a `KairosError` when the route could not get an answer (no backend,
        502, 504)."""
        return await _fetch(self, self._exchange, max_bytes)


async def _fetch(view: Replay, exchange: Any, max_bytes: int) -> Fetched | None:
    match = exchange.match
    assert match is not None
    route = exchange.snapshot.routes[match.route.index]
    trace = exchange.trace
    target = match.upstream_path
    headers = exchange.upstream_headers()
    upstream = UpstreamRequest(
        f"{target}?{exchange.query}" if exchange.query else target,
        [(n, v) for n, v in headers if n.lower() not in _CLIENT_ONLY],
        b"",
        exchange.headers.get("Host") if route.preserve_host else None,
    )
    for _policy, hook in route.chain.before_upstream:
        answer = hook(view, upstream)
        if answer is not None and not isinstance(answer, Response | StreamedResponse):
            answer = await answer
        if answer is not None:
            return None  # a policy answers this request itself: nothing to refresh
    runtime = exchange.host.runtime
    attempt, response = await forward(
        route,
        upstream,
        method="GET",
        client_ip=exchange.client_ip,
        request_id=exchange.request_id,
        pool=runtime.pool,
        rng=runtime.rng,
        trace=trace,
    )
    try:
        parts: list[bytes] = []
        size = 0
        while chunk := await response.read():
            size += len(chunk)
            if size > max_bytes:
                response.abort()
                return Fetched(response.status, response.reason, response.headers, None)
            parts.append(chunk)
        return Fetched(response.status, response.reason, response.headers, b"".join(parts))
    except BaseException:
        response.abort()
        raise
    finally:
        attempt.close()
