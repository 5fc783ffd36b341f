"""The Kairos exception tree.

Every error the gateway can turn into an HTTP response is a `KairosError`. Each
class carries, as class attributes, the HTTP ``status``, the problem ``type`` token
and a short ``title`` (RFC 9457); an instance carries the ``detail``. One handler
at the HTTP edge renders them, adding `headers()` to the response and `extensions()`
to the problem body::

    KairosError                500 internal_error
    ├── BadRequest             400 bad_request
    │   └── InvalidPath        400 invalid_path
    ├── Unauthorized           401 unauthorized         (WWW-Authenticate: Bearer)
    ├── Forbidden              403 forbidden
    ├── RouteNotFound          404 route_not_found
    ├── MethodNotAllowed       405 method_not_allowed   (.allow)
    ├── PayloadTooLarge        413 payload_too_large
    ├── ConfigError            422 invalid_config       (.errors)
    ├── TooManyRequests        429 rate_limited         (.retry_after_s, rate-limit headers)
    ├── UriTooLong             414 uri_too_long
    ├── HeadersTooLarge        431 request_header_fields_too_large
    ├── UpstreamError          502 upstream_error
    ├── ServiceUnavailable     503 service_unavailable
    │   ├── CircuitOpen        503 circuit_open         (.retry_after_s)
    │   ├── BackendSaturated   503 backend_saturated    (.retry_after_s)
    │   └── NoHealthyBackend   503 no_healthy_backend
    └── UpstreamTimeout        504 upstream_timeout

`FieldError` is one validation failure inside a configuration, located by a
field path such as ``routers[0].backends[1].port``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, final

__all__ = [
    "ABSENT",
    "BackendSaturated",
    "BadRequest",
    "CircuitOpen",
    "ConfigError",
    "FieldError",
    "Forbidden",
    "HeadersTooLarge",
    "InvalidPath",
    "KairosError",
    "MethodNotAllowed",
    "NoHealthyBackend",
    "PayloadTooLarge",
    "RouteNotFound",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "UriTooLong",
]


class KairosError(Exception):
    """Base of all Kairos errors; ``detail`` is safe to show to a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail or self.title
        super().__init__(self.detail)

    def headers(self) -> list[tuple[str, str]]:
        """Response headers this error requires (e.g. ``Allow``, ``Retry-After``)."""
        return []

    def extensions(self) -> dict[str, object]:
        """Extra members for the problem body (RFC 9457 extension members)."""
        return {}


class BadRequest(KairosError):
    status = 400
    type = "bad_request"
    title = "Bad request"


class InvalidPath(BadRequest):
    """The request path holds a dot-segment (``.``/``..``, possibly percent-encoded)."""

    type = "invalid_path"
    title = "Invalid path"


def _bearer_challenge(error: str | None) -> str:
    challenge = 'Bearer realm="kairos"'
    return f'{challenge}, error="{error}"' if error else challenge


class Unauthorized(KairosError):
    """No usable credentials. ``error`` is an RFC 6750 code (e.g. ``invalid_token``)."""

    status = 401
    type = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str = "", *, error: str | None = None) -> None:
        super().__init__(detail)
        self.error = error

    def headers(self) -> list[tuple[str, str]]:
        return [("WWW-Authenticate", _bearer_challenge(self.error))]


class Forbidden(KairosError):
    """Credentials are valid but not sufficient. With ``error`` (RFC 6750, e.g.
    ``insufficient_scope``) the response carries a Bearer challenge too."""

    status = 403
    type = "forbidden"
    title = "Forbidden"

    def __init__(self, detail: str = "", *, error: str | None = None) -> None:
        super().__init__(detail)
        self.error = error

    def headers(self) -> list[tuple[str, str]]:
        if self.error is None:
            return []
        return [("WWW-Authenticate", _bearer_challenge(self.error))]


class RouteNotFound(KairosError):
    status = 404
    type = "route_not_found"
    title = "Route not found"


class MethodNotAllowed(KairosError):
    """The path matched, but no route for it allows the method; ``allow`` is the union."""

    status = 405
    type = "method_not_allowed"
    title = "Method not allowed"

    def __init__(self, detail: str = "", *, allow: Iterable[str] = ()) -> None:
        super().__init__(detail)
        self.allow: frozenset[str] = frozenset(allow)

    def headers(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(sorted(self.allow)))]

    def extensions(self) -> dict[str, object]:
        return {"allow": sorted(self.allow)}


class PayloadTooLarge(KairosError):
    status = 413
    type = "payload_too_large"
    title = "Payload too large"


class TooManyRequests(KairosError):
    """A rate limit refused the request; ``extra_headers`` carries the RateLimit fields."""

    status = 429
    type = "rate_limited"
    title = "Too many requests"

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after_s: float,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.extra_headers = list(extra_headers)

    def headers(self) -> list[tuple[str, str]]:
        out = [(k, v) for k, v in self.extra_headers if k.lower() != "retry-after"]
        return [("Retry-After", str(self.retry_after_s)), *out]

    def extensions(self) -> dict[str, object]:
        return {"retry_after_s": self.retry_after_s}


class HeadersTooLarge(KairosError):
    status = 431
    type = "request_header_fields_too_large"
    title = "Request header fields too large"


class UriTooLong(KairosError):
    status = 414
    type = "uri_too_long"
    title = "URI too long"


class UpstreamError(KairosError):
    status = 502
    type = "upstream_error"
    title = "Upstream error"


class ServiceUnavailable(KairosError):
    status = 503
    type = "service_unavailable"
    title = "Service unavailable"


class CircuitOpen(ServiceUnavailable):
    """Every backend the request could use has an open circuit breaker."""

    type = "circuit_open"
    title = "Circuit open"

    def __init__(self, detail: str = "", *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, math.ceil(retry_after_s))

    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after_s))]

    def extensions(self) -> dict[str, object]:
        return {"retry_after_s": self.retry_after_s}


class BackendSaturated(ServiceUnavailable):
    """Every backend the request could use had all its connections busy and its queue
    full (or the wait for a connection timed out): ``connection_limits``."""

    type = "backend_saturated"
    title = "Backend saturated"

    def __init__(self, detail: str = "", *, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, math.ceil(retry_after_s))

    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after_s))]

    def extensions(self) -> dict[str, object]:
        return {"retry_after_s": self.retry_after_s}


class NoHealthyBackend(ServiceUnavailable):
    """Active health checks have taken every backend of the route out of rotation."""

    type = "no_healthy_backend"
    title = "No healthy backend"


class UpstreamTimeout(KairosError):
    status = 504
    type = "upstream_timeout"
    title = "Upstream timeout"


@final
class _Absent:
    """Type of `ABSENT`: marks a `FieldError` that has no offending value to show."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()

_MAX_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class FieldError:
    """One configuration error at ``loc`` (keys and list indexes from the root)."""

    loc: tuple[str | int, ...]
    message: str
    value: object = field(default=ABSENT)

    @property
    def path(self) -> str:
        """The location as ``routers[0].backends[1].port``; ``""`` for the root."""
        out = ""
        for part in self.loc:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += f".{part}" if out else part
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON-safe form: ``path``, ``message`` and, when there is one, ``value``."""
        out: dict[str, object] = {"path": self.path, "message": self.message}
        if self.value is not ABSENT:
            out["value"] = _json_safe(self.value)
        return out

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.loc else self.message
        if self.value is not ABSENT:
            shown = json.dumps(_json_safe(self.value), ensure_ascii=False)
            if len(shown) > _MAX_VALUE_CHARS:
                shown = shown[: _MAX_VALUE_CHARS - 3] + "..."
            text += f" (got {shown})"
        return text


def _json_safe(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)


class ConfigError(KairosError):
    """A configuration is invalid; ``errors`` lists every problem found."""

    status = 422
    type = "invalid_config"
    title = "Invalid configuration"

    def __init__(self, errors: Sequence[FieldError], detail: str = "") -> None:
        self.errors: list[FieldError] = list(errors)
        count = len(self.errors)
        super().__init__(detail or f"{count} configuration error{'s' if count != 1 else ''}")

    def __str__(self) -> str:
        return "\n".join([f"{self.detail}:", *(f"  {error}" for error in self.errors)])
