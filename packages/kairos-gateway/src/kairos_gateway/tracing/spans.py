"""The gateway's two span shapes, from the records `otel` makes to OTLP protobuf.

A finished span is queued as a record: a tuple of the values it was made of (ids as
integers, times, the request's method, route, status...), first its encoder
(`SpanShapes.server` or `SpanShapes.client`). The export thread encodes a batch at a
time, so the event loop only fills the tuple; what repeats from span to span (a
route's name and attributes, a backend's, a status) is encoded once per distinct value
and reused, and only the ids, times, path, request id, user agent and ``url.full``
are written for each span. The attribute names are the HTTP semantic conventions'
(docs/tracing.md lists them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import otlp

if TYPE_CHECKING:
    from ..upstream import Endpoint

__all__ = ["CLIENT_CLOSED", "SpanShapes"]

#: The status of an exchange whose client left before the response was complete.
CLIENT_CLOSED = 499
#: Encoded parts kept per cache (distinct routes x statuses x backends, client
#: addresses); a cache that fills up starts over.
_MAX_CACHED = 4096
_URL_PATH = otlp.key("url.path")
_URL_FULL = otlp.key("url.full")
_USER_AGENT = otlp.key("user_agent.original")
_REQUEST_ID = otlp.key("kairos.request_id")


class _Cache(dict[Any, Any]):
    """Encoded span parts by the values they encode, bounded: when full it starts over
    (a bound for values that vary more than expected, such as client addresses)."""

    def put(self, key: Any, value: Any) -> Any:
        if len(self) >= _MAX_CACHED:
            self.clear()
        self[key] = value
        return value


def _server_shape(
    method: str,
    template: str | None,
    https: bool,
    host: str | None,
    backend: str,
    status: int,
    error: str | None,
) -> tuple[bytes, bytes, bytes]:
    """A server span's name and kind, its attributes that repeat, and its status."""
    values: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": "https" if https else "http",
    }
    if template is not None:
        values["http.route"] = template
    if host:
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if name and port.isdigit():
            values["server.address"] = name
            values["server.port"] = int(port)
        else:
            values["server.address"] = host
    values["network.protocol.version"] = "1.1"
    if backend:
        values["kairos.backend"] = backend
    outcome = b""
    if status == CLIENT_CLOSED:
        values["kairos.client_closed"] = True
    elif status:
        values["http.response.status_code"] = status
        if status >= 500:
            # The problem's type when the gateway answered (also the status message).
            values["error.type"] = error or str(status)
            outcome = otlp.status(True, error)
    name = method if template is None else f"{method} {template}"
    return otlp.name_kind(name, otlp.SERVER), otlp.attributes(values), outcome


def _client_shape(
    endpoint: Endpoint, method: str, resend: int, status: int | None, error: str | None
) -> tuple[bytes, bytes, bytes]:
    """A client span's name and kind, its attributes but ``url.full``, its status."""
    values: dict[str, Any] = {
        "http.request.method": method,
        "server.address": endpoint.host,
        "server.port": endpoint.port,
        "network.peer.address": endpoint.host,
    }
    if resend:
        values["http.request.resend_count"] = resend
    if status is not None:
        values["http.response.status_code"] = status
    if error is not None:
        values["error.type"] = error
    return (
        otlp.name_kind(method, otlp.CLIENT),
        otlp.attributes(values),
        otlp.status(error is not None, error),
    )


class SpanShapes:
    """Encoders of the two span records, with the parts encoded so far (used by the
    export thread only)."""

    def __init__(self) -> None:
        self._servers = _Cache()
        self._clients = _Cache()
        self._peers = _Cache()

    def server(self, record: tuple[Any, ...]) -> bytes:
        """A SERVER span from ``(encoder, ids, parent span id in hex or None, start,
        end, method, route template, https, Host, backend, status, the gateway's
        problem type, client address, path, User-Agent, request id)``; ``ids`` is the
        trace id and the span id as one 192-bit integer."""
        (
            _,
            ids,
            parent_id,
            start,
            end,
            method,
            template,
            https,
            host,
            backend,
            status,
            error,
            client_ip,
            path,
            agent,
            request_id,
        ) = record
        key = (method, template, https, host, backend, status, error)
        shape = self._servers.get(key) or self._servers.put(key, _server_shape(*key))
        head, constant, outcome = shape
        peer = self._peers.get(client_ip) or self._peers.put(
            client_ip, otlp.attributes({"network.peer.address": client_ip})
        )
        raw = ids.to_bytes(24, "big")
        return otlp.span(
            raw[:16],
            raw[16:],
            None if parent_id is None else bytes.fromhex(parent_id),
            parent_id is not None,  # a parent is always the client's
            head,
            start,
            end,
            b"".join(
                (
                    constant,
                    peer,
                    otlp.string_attribute(_URL_PATH, path),
                    otlp.string_attribute(_USER_AGENT, agent) if agent else b"",
                    otlp.string_attribute(_REQUEST_ID, request_id),
                    outcome,
                )
            ),
        )

    def client(self, record: tuple[Any, ...]) -> bytes:
        """A CLIENT span from ``(encoder, the server span's ids, span id, start, end,
        endpoint, method, target, resend count, status or None, error type or None,
        encoded events)``."""
        (_, ids, span_id, start, end, endpoint, method, target, resend, status, error, events) = (
            record
        )
        key = (endpoint.label, method, resend, status, error)
        shape = self._clients.get(key) or self._clients.put(
            key, _client_shape(endpoint, method, resend, status, error)
        )
        head, constant, outcome = shape
        raw = ids.to_bytes(24, "big")
        url = endpoint.label + target.partition("?")[0]  # no query: it may hold secrets
        return otlp.span(
            raw[:16],
            span_id.to_bytes(8, "big"),
            raw[16:],
            False,
            head,
            start,
            end,
            constant + otlp.string_attribute(_URL_FULL, url) + events + outcome,
        )
