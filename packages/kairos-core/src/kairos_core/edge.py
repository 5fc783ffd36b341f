"""Edge policies that are pure configuration: CORS and security response headers."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ._model import KairosModel

__all__ = ["CorsConfig", "SecurityHeadersConfig", "origin_pattern"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<host>(\*\.)?[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?"
)


def origin_pattern(origin: str) -> re.Pattern[str] | None:
    """A regex for a wildcard-subdomain origin (``https://*.example.com``), else None.

    ``*.`` matches one or more DNS labels, never an empty one, so
    ``https://*.example.com`` matches ``https://a.example.com`` and
    ``https://a.b.example.com`` but not ``https://example.com`` or
    ``https://evil-example.com``.
    """
    if "://*." not in origin:
        return None
    scheme, rest = origin.split("://*.", 1)
    return re.compile(re.escape(scheme) + r"://([A-Za-z0-9-]+\.)+" + re.escape(rest))


def _header_names(values: list[str]) -> list[str]:
    for value in values:
        if value != "*" and not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid header name")
    return values


class CorsConfig(KairosModel):
    """Cross-origin resource sharing. Preflights are answered by the gateway.

    ``allowed_origins``: exact origins (``https://app.example.com``), ``*`` for any, or
    a wildcard subdomain (``https://*.example.com``). ``allowed_headers`` empty means:
    allow the headers the preflight asks for. ``*`` with credentials is refused, as
    browsers refuse it.
    """

    allowed_origins: Annotated[list[str], Field(min_length=1)]
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    )
    allowed_headers: list[str] = Field(default_factory=list)
    exposed_headers: list[str] = Field(default_factory=list)
    allow_credentials: bool = False
    max_age: Annotated[int, Field(ge=0, le=86400)] = 600

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            if value == "*":
                continue
            if not _ORIGIN.fullmatch(value):
                raise ValueError(
                    f"{value!r} is not an origin: use scheme://host[:port] with no path "
                    "(e.g. https://app.example.com), https://*.example.com, or *"
                )
        return values

    @field_validator("allowed_methods", mode="before")
    @classmethod
    def _methods(cls, values: object) -> object:
        if isinstance(values, list):
            values = [v.upper() if isinstance(v, str) else v for v in values]
            for v in values:
                if not isinstance(v, str) or not _TOKEN.fullmatch(v):
                    raise ValueError(f"{v!r} is not a method name")
        return values

    @field_validator("allowed_headers", "exposed_headers")
    @classmethod
    def _headers(cls, values: list[str]) -> list[str]:
        return _header_names(values)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allowed_origins:
            raise ValueError(
                "allowed_origins '*' with allow_credentials is refused by browsers; "
                "list the origins instead"
            )
        return self


class SecurityHeadersConfig(KairosModel):
    """Response headers added when the backend did not set them; null turns one off.

    ``strict_transport_security`` is only sent on requests that arrived over HTTPS
    (directly, or per ``X-Forwarded-Proto`` from a trusted proxy): on plain HTTP it
    has no effect in browsers.
    """

    enabled: bool = True
    x_content_type_options: str | None = "nosniff"
    x_frame_options: str | None = "DENY"
    referrer_policy: str | None = "no-referrer"
    strict_transport_security: str | None = "max-age=31536000; includeSubDomains"
    content_security_policy: str | None = "default-src 'none'; frame-ancestors 'none'"
    permissions_policy: str | None = "camera=(), geolocation=(), microphone=()"

    @field_validator(
        "x_content_type_options",
        "x_frame_options",
        "referrer_policy",
        "strict_transport_security",
        "content_security_policy",
        "permissions_policy",
    )
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\r\n\0")):
            raise ValueError("must be a non-empty single-line header value, or null to turn off")
        return value

    def headers(self, *, https: bool) -> list[tuple[str, str]]:
        """The (name, value) pairs to add for a response to an https/http request."""
        if not self.enabled:
            return []
        pairs = [
            ("X-Content-Type-Options", self.x_content_type_options),
            ("X-Frame-Options", self.x_frame_options),
            ("Referrer-Policy", self.referrer_policy),
            ("Strict-Transport-Security", self.strict_transport_security if https else None),
            ("Content-Security-Policy", self.content_security_policy),
            ("Permissions-Policy", self.permissions_policy),
        ]
        return [(name, value) for name, value in pairs if value is not None]
