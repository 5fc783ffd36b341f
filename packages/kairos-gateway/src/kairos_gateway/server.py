"""Tornado's HTTP/1.1 server, minus two per-request costs.

`KairosHTTPServer` is Tornado's `HTTPServer` with the gateway as its connection
delegate (no `RequestHandler`, no `Application`), and two changes measured to matter at
gateway request rates:

- Tornado wraps every wait for request headers in `gen.with_timeout` (a timer and an
  extra future per request). Here the header timeout is off and one sweep per interval
  closes connections that have waited too long for a request (idle keep-alive
  connections and clients that trickle their headers alike).
- Tornado switches TCP_NODELAY on and off again around every response (two
  `setsockopt` calls per request). Here it is set once per connection and left on, as
  nginx does for keep-alive connections.

Requests are read by `http1.StrictServerConnection` (strict chunked bodies, RFC 9112).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.iostream import IOStream

from .exchange import Exchange, Host
from .http1 import StrictHTTP1Connection, StrictServerConnection


class ServerHost(Host, Protocol):
    """An exchange's host, plus the clock that times waiting connections."""

    clock: Callable[[], float]


def _keep_nodelay(value: bool) -> None:
    """Stands in for `IOStream.set_nodelay` once the socket option is set for good."""


class KairosHTTPServer(HTTPServer):
    # HTTPServer is Configurable: real initialisation happens in initialize().
    def initialize(  # type: ignore[override]
        self,
        gateway: ServerHost,
        *,
        max_header_size: int,
        max_body_size: int,
        body_timeout: float,
        admin: bool = False,
        **kwargs: Any,
    ) -> None:
        super().initialize(
            self._unused_callback,
            max_header_size=max_header_size,
            max_body_size=max_body_size,
            body_timeout=body_timeout,
            decompress_request=False,
            xheaders=False,
            **kwargs,
        )
        self.conn_params.header_timeout = None
        self.gateway = gateway
        #: The separate admin listener: management API and gateway endpoints only.
        self.admin = admin

    @staticmethod
    def _unused_callback(request: httputil.HTTPServerRequest) -> None:
        raise AssertionError("start_request is overridden; no callback is used")

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        sock = stream.socket
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            stream.set_nodelay(True)
            stream.set_nodelay = _keep_nodelay  # type: ignore[method-assign]
        # HTTPServer.handle_stream, with the strict HTTP/1.1 reader (http1.py).
        context = _HTTPRequestContext(stream, address, self.protocol, self.trusted_downstream)
        conn = StrictServerConnection(
            stream, self.conn_params, context, header_limit=self.gateway.max_header_size
        )
        self._connections.add(conn)
        conn.start_serving(self)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        gateway = self.gateway
        conn = cast(StrictHTTP1Connection, request_conn)
        server = cast(HTTP1ServerConnection, server_conn)
        if gateway.draining:
            # Between two requests on a keep-alive connection while shutting down:
            # close it rather than start another request.
            conn.close()
        else:
            gateway.waiting[server] = gateway.clock()
        return Exchange(gateway, server, conn, admin_listener=self.admin)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        self.gateway.waiting.pop(cast(HTTP1ServerConnection, server_conn), None)
