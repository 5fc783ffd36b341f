"""`Backend`: one upstream server of a route."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ._model import KairosModel

__all__ = ["Backend"]

_SCHEMES = ("http", "https")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _check_host(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(
            "must start with http:// or https:// (other schemes are not supported), "
            "e.g. 'http://users-service'"
        )
    if any(char in rest for char in "/?#"):
        raise ValueError("must be scheme and host name only, without a path, query or fragment")
    if "@" in rest:
        raise ValueError("must not contain user information ('user@')")
    if rest.startswith("["):
        literal, closed, after = rest[1:].partition("]")
        if not closed or after:
            if after.startswith(":"):
                raise ValueError("must not contain a port; put the port in `port`")
            raise ValueError("has an unterminated IPv6 literal")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(f"{literal!r} is not an IPv6 address") from None
    elif ":" in rest:
        raise ValueError("must not contain a port; put the port in `port`")
    elif not _HOSTNAME.fullmatch(rest):
        raise ValueError("must name a host: letters, digits, '.', '-' and '_'")
    return f"{scheme.lower()}://{rest}"


class Backend(KairosModel):
    """An upstream server; ``address`` (``http://name:port``) is its identity."""

    host: Annotated[str, Field(description="http://name or https://name, no port or path")]
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=1)] = 1
    health_check_path: str | None = None
    tls_verify: bool = True
    tls_ca_file: str | None = None
    #: Client certificate (PEM chain) and key presented to an https backend (mTLS).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: Overrides the top-level ``connection_limits`` for this backend (field by field).
    max_connections: Annotated[int, Field(ge=1, le=100_000)] | None = None
    max_pending: Annotated[int, Field(ge=0, le=100_000)] | None = None
    pending_timeout_ms: Annotated[int, Field(ge=1, le=600_000)] | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("health_check_path")
    @classmethod
    def _health_check_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("tls_verify")
    @classmethod
    def _tls_verify(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and _is_plain_http(info):
            raise ValueError("applies only to https backends")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _tls_ca_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and _is_plain_http(info):
            raise ValueError("applies only to https backends")
        return value

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_client_files(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and _is_plain_http(info):
            raise ValueError("applies only to https backends")
        return value

    @model_validator(mode="after")
    def _client_pair(self) -> Backend:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give 'tls_cert_file' and 'tls_key_file' together")
        return self

    @property
    def scheme(self) -> str:
        return self.host.partition("://")[0]

    @property
    def hostname(self) -> str:
        """The host name or address, IPv6 brackets removed."""
        return self.host.partition("://")[2].strip("[]")

    @property
    def address(self) -> str:
        """``scheme://host:port``: the key for per-backend state and metrics labels."""
        return f"{self.host}:{self.port}"


def _is_plain_http(info: ValidationInfo) -> bool:
    host = info.data.get("host")
    return isinstance(host, str) and host.startswith("http://")
