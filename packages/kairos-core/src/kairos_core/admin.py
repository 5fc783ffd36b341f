"""`AdminConfig`: who may use the management API, and where it listens.

The admin token can be given in clear (``token``) or as the hex SHA-256 of the token
(``token_sha256``), so a config file in a repository need not hold the secret itself.
``KAIROS_ADMIN_TOKEN`` in the environment takes precedence over both; that token has
the ``admin`` role. Named tokens (``tokens``, `roles.AdminTokenConfig`) carry a role
each. With no token at all, only loopback clients may call the management API.

Checks that would quote a secret run at model level, so an error names the field but
never echoes its value.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    SecretStr,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from ._model import KairosModel
from .auth import reveal_secret
from .roles import MIN_ADMIN_TOKEN_CHARS, AdminTokenConfig, check_token_fields

__all__ = [
    "MIN_ADMIN_TOKEN_CHARS",
    "AdminConfig",
    "AuditSettings",
    "ConfigBackups",
    "parse_listen",
]


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


class ConfigBackups(KairosModel):
    """Copies of the config file kept when the management API rewrites it.

    Before each write the previous file is copied to ``<dir>/<name>.<UTC time>.bak``;
    the newest ``keep`` copies stay, older ones are deleted. ``keep: 0``: no copies.
    """

    #: Where the copies go; a relative path is relative to the config file's directory.
    dir: str = ".kairos-backups"
    keep: Annotated[int, Field(ge=0, le=1000)] = 10


class AuditSettings(KairosModel):
    """Where the audit trail and the kept configuration versions live (read at
    start-up). ``dir`` is relative to the config file's directory; without a config
    file both are kept in memory."""

    dir: str = ".kairos-audit"
    keep_entries: Annotated[int, Field(ge=10, le=100_000)] = 1000
    keep_versions: Annotated[int, Field(ge=1, le=1000)] = 20


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
    #: Named tokens with roles, besides ``token`` / ``token_sha256`` (role admin).
    tokens: list[AdminTokenConfig] = Field(default_factory=list)
    #: Copies of the config file kept when the API, CLI or UI rewrites it.
    backups: ConfigBackups = Field(default_factory=ConfigBackups)
    #: The audit trail and the versions kept for rollback.
    audit: AuditSettings = Field(default_factory=AuditSettings)

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
        check_token_fields(self.token, self.token_sha256, info)
        names = [t.name for t in self.tokens]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"token names must be unique ({', '.join(repeated)} repeated)")
        return self

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return None if self.listen is None else parse_listen(self.listen)
