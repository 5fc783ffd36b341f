"""CORS: preflights answered by the gateway, allow headers on actual responses.

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is matched
against the route that would serve the actual request, answered 204 by the gateway
without touching the backend or asking for a token. An origin that is not allowed
gets no CORS headers at all (the browser then refuses the response). Every response
of a route with a CORS policy carries `Vary: Origin`, since it depends on the origin.

On the chain: ``on_headers`` adds the allow headers to whatever the response will be.
The preflight itself is answered by the exchange (it is a handler of its own: it
matches the route of the *requested* method), through `preflight_headers`.
"""

from __future__ import annotations

import re

from kairos_core import CorsConfig, origin_pattern

from ..chain import Policy, Request

__all__ = ["VARY", "CorsPolicy"]

VARY = ("Vary", "Origin")


class CorsPolicy(Policy):
    name = "cors"
    priority = 2000
    __slots__ = (
        "_any",
        "_credentials",
        "_exact",
        "_expose",
        "_headers",
        "_max_age",
        "_methods",
        "_patterns",
    )

    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.allowed_origins
        self._exact = frozenset(o for o in config.allowed_origins if "*" not in o)
        self._patterns: tuple[re.Pattern[str], ...] = tuple(
            p for o in config.allowed_origins if (p := origin_pattern(o)) is not None
        )
        self._methods = ", ".join(config.allowed_methods)
        self._headers = ", ".join(config.allowed_headers)
        self._expose = ", ".join(config.exposed_headers)
        self._credentials = config.allow_credentials
        self._max_age = str(config.max_age)

    def allows(self, origin: str) -> bool:
        if self._any or origin in self._exact:
            return True
        return any(p.fullmatch(origin) for p in self._patterns)

    def _allow_origin(self, origin: str) -> list[tuple[str, str]]:
        # With credentials the origin must be echoed, never "*" (validation refuses
        # "*" with credentials, so echoing is only needed for listed origins).
        out = [("Access-Control-Allow-Origin", "*" if self._any else origin)]
        if self._credentials:
            out.append(("Access-Control-Allow-Credentials", "true"))
        return out

    def preflight_headers(
        self, origin: str, requested_headers: str | None
    ) -> list[tuple[str, str]]:
        """Headers for the 204 answer to a preflight from ``origin``."""
        if not self.allows(origin):
            return [VARY]
        out = self._allow_origin(origin)
        out.append(("Access-Control-Allow-Methods", self._methods))
        # No configured list: allow what the preflight asks for (as Kong does).
        allowed = self._headers or (requested_headers or "").strip()
        if allowed:
            out.append(("Access-Control-Allow-Headers", allowed))
        out.append(("Access-Control-Max-Age", self._max_age))
        out.append(VARY)
        return out

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to an actual response for a request from ``origin``."""
        if origin is None or not self.allows(origin):
            return [VARY]
        out = self._allow_origin(origin)
        if self._expose:
            out.append(("Access-Control-Expose-Headers", self._expose))
        out.append(VARY)
        return out

    def on_headers(self, request: Request) -> None:
        request.response_headers.extend(self.response_headers(request.headers.get("Origin")))
