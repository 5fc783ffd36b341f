"""`AdminConfig`: who may use the management API, and where it listens.

The admin token can be given in clear (``token``) or as the hex SHA-256 of the token
(``token_sha256``), so a config file in a repository need not hold the secret itself.
``KAIROS_ADMIN_TOKEN`` in the environment takes precedence over both. With no token at
all, only loopback clients may call the management API.

Checks that would quote a secret run at model level, so an error names the field but
never echoes its value.
"""

from __future__ import annotations

import re

from pydantic import (
    SecretStr,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from ._model import KairosModel
from .auth import is_redacted_placeholder, reveal_secret

__all__ = ["MIN_ADMIN_TOKEN_CHARS", "AdminConfig", "parse_listen"]

#: Shortest admin token accepted in a config file.
MIN_ADMIN_TOKEN_CHARS = 16
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def parse_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:5901"`` for IPv6) to ``(host, port)``; raises `ValueError`."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("must be 'host:port', e.g. '127.0.0.1:5901'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. '[::1]:5901'")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


class AdminConfig(KairosModel):
    """Access to the management API (`/api/...`) and `/metrics`."""

    #: Bearer token every management API call must present.
    token: SecretStr | None = None
    #: Hex SHA-256 of the token, instead of the token itself.
    token_sha256: SecretStr | None = None
    #: Serve `/api/*` on a separate listener ("host:port") and not on the proxy port.
    #: Read at start-up: changing it takes a restart.
    listen: str | None = None
    #: When false, `/metrics` needs the same credentials as the management API.
    metrics_public: bool = True

    @field_serializer("token", "token_sha256")
    def _dump_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _check_token(self, info: ValidationInfo) -> AdminConfig:
        if self.token is not None and self.token_sha256 is not None:
            raise ValueError("give either 'token' or 'token_sha256', not both")
        token = None if is_redacted_placeholder(self.token, info) else self.token
        if token is not None and len(token.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"'token' must be at least {MIN_ADMIN_TOKEN_CHARS} characters long")
        digest = None if is_redacted_placeholder(self.token_sha256, info) else self.token_sha256
        if digest is not None and not _SHA256_HEX.fullmatch(digest.get_secret_value()):
            raise ValueError("'token_sha256' must be 64 hexadecimal digits (a SHA-256 digest)")
        return self

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return None if self.listen is None else parse_listen(self.listen)
