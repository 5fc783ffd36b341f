"""Named management API tokens and their roles (``admin.tokens[]``).

A role says what a token may do, each including the ones before it: ``viewer`` reads
(GET and HEAD; secrets are redacted in every answer anyway), ``operator`` also changes
routes and reloads the configuration, ``admin`` may do everything, including the
whole configuration (`PUT /api/config`: authentication, limits, tokens) and its
sections. The single ``admin.token`` / ``token_sha256`` / ``KAIROS_ADMIN_TOKEN`` has
the ``admin`` role.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    model_validator,
)

from ._model import KairosModel
from .auth import is_redacted_placeholder, reveal_secret

__all__ = [
    "ADMIN_ROLES",
    "MIN_ADMIN_TOKEN_CHARS",
    "AdminRole",
    "AdminTokenConfig",
    "WhoAmI",
    "check_token_fields",
    "role_allows",
]

#: Shortest admin token accepted in a config file.
MIN_ADMIN_TOKEN_CHARS = 16
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

AdminRole = Literal["viewer", "operator", "admin"]
#: Least power first.
ADMIN_ROLES: tuple[AdminRole, ...] = ("viewer", "operator", "admin")


def role_allows(role: AdminRole, needed: AdminRole) -> bool:
    """Does ``role`` include ``needed``?"""
    return ADMIN_ROLES.index(role) >= ADMIN_ROLES.index(needed)


def check_token_fields(
    token: SecretStr | None, token_sha256: SecretStr | None, info: ValidationInfo
) -> None:
    """At most one of ``token`` / ``token_sha256``, each well formed. The messages
    name the field, never its value."""
    if token is not None and token_sha256 is not None:
        raise ValueError("give either 'token' or 'token_sha256', not both")
    clear = None if is_redacted_placeholder(token, info) else token
    if clear is not None and len(clear.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
        raise ValueError(f"'token' must be at least {MIN_ADMIN_TOKEN_CHARS} characters long")
    digest = None if is_redacted_placeholder(token_sha256, info) else token_sha256
    if digest is not None and not _SHA256_HEX.fullmatch(digest.get_secret_value()):
        raise ValueError("'token_sha256' must be 64 hexadecimal digits (a SHA-256 digest)")


class AdminTokenConfig(KairosModel):
    """One named token: ``{name, token | token_sha256, role}``."""

    #: Shown in logs and refusals (never the token itself).
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    token: SecretStr | None = None
    token_sha256: SecretStr | None = None
    role: AdminRole

    @field_serializer("token", "token_sha256")
    def _dump_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)

    @model_validator(mode="after")
    def _check_token(self, info: ValidationInfo) -> AdminTokenConfig:
        if self.token is None and self.token_sha256 is None:
            raise ValueError("give the token as 'token' or 'token_sha256'")
        check_token_fields(self.token, self.token_sha256, info)
        return self


class WhoAmI(BaseModel):
    """`GET /api/whoami`: the calling token's name and role. Without any token
    configured a loopback caller is ``{"name": "loopback", "role": "admin"}``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: AdminRole
