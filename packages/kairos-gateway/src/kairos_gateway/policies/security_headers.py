"""Security response headers (``security_headers``), where the backend set none."""

from __future__ import annotations

from ..chain import Policy, Request

__all__ = ["SecurityHeaders"]


class SecurityHeaders(Policy):
    """Adds the configured headers to every response that lacks them; HSTS only on
    requests that arrived over HTTPS (directly, or per a trusted proxy)."""

    name = "security_headers"
    priority = 2100

    __slots__ = ("_https", "_plain")

    def __init__(self, plain: list[tuple[str, str]], https: list[tuple[str, str]]) -> None:
        self._plain = plain
        self._https = https

    def on_headers(self, request: Request) -> None:
        request.add_default_headers(self._https if request.https else self._plain)
