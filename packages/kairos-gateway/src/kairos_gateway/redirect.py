"""The plain-HTTP listener of a TLS gateway (``listen.http_redirect``): every request
gets ``308 Permanent Redirect`` to the same host and target on https.

308 rather than 301: a client must repeat the request with the same method and body.
Only the request line and headers are used; a body is read (up to 64 KiB) and
dropped. A request without a usable ``Host`` (or with a target that is not a path)
gets 400, so the redirect never points anywhere the client did not name.
"""

from __future__ import annotations

import re

from tornado import httputil
from tornado.httpserver import HTTPServer

__all__ = ["RedirectServer", "redirect_location"]

_HOST = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)
_MAX_BODY = 64 * 1024


def redirect_location(host: str | None, target: str, https_port: int) -> str | None:
    """``https://host[:port]/target`` for a request's ``Host`` and target; None when
    either cannot be used. The port is left out when it is 443."""
    if host is None or not target.startswith("/"):
        return None
    match = _HOST.fullmatch(host.strip())
    if match is None:
        return None
    name = match.group("name").lower()
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{name}{port}{target}"


class RedirectServer(HTTPServer):
    """Answers everything with a redirect to https (`redirect_location`)."""

    # HTTPServer is Configurable: real initialisation happens in initialize().
    def initialize(  # type: ignore[override]
        self, *, https_port: int, idle_timeout_s: float
    ) -> None:
        super().initialize(
            self._answer,
            max_body_size=_MAX_BODY,
            idle_connection_timeout=idle_timeout_s,
            body_timeout=idle_timeout_s,
        )
        self.https_port = https_port

    def _answer(self, request: httputil.HTTPServerRequest) -> None:
        location = redirect_location(
            request.headers.get("Host"), request.uri or "", self.https_port
        )
        if location is None:
            start = httputil.ResponseStartLine("HTTP/1.1", 400, "Bad Request")
            body = b"a request to this port needs a Host header and a path\n"
            headers = httputil.HTTPHeaders({"Content-Type": "text/plain; charset=utf-8"})
        else:
            start = httputil.ResponseStartLine("HTTP/1.1", 308, "Permanent Redirect")
            body = f"redirecting to {location}\n".encode()
            headers = httputil.HTTPHeaders(
                {"Location": location, "Content-Type": "text/plain; charset=utf-8"}
            )
        headers["Content-Length"] = str(len(body))
        connection = request.connection
        assert connection is not None
        connection.write_headers(start, headers, None if request.method == "HEAD" else body)
        connection.finish()
