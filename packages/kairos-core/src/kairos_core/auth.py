"""`JwtConfig`: how the gateway verifies bearer tokens, and the secret-strength rule."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

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

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MIN_SECRET_BYTES",
    "REDACTED",
    "REDACTED_CONTEXT",
    "JwtAlgorithm",
    "JwtConfig",
    "check_forward_claims",
    "is_redacted_placeholder",
    "reveal_secret",
    "secret_problem",
]

JwtAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
HMAC_ALGORITHMS: frozenset[str] = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_SECRET_BYTES = 32

_PLACEHOLDER_SECRETS = frozenset(
    {
        "please-change-this-secret",
        "your-secret-key-here",
        "your-256-bit-secret",
        "your-256-bit-secret-key-here",
        "changeme",
        "change-me",
        "secret",
    }
)
_PLACEHOLDER_FRAGMENTS = ("change-this", "your-secret")
#: How a secret is shown in a redacted dump (``GET /api/config``).
REDACTED = "***"
#: Validation context key (``context={REDACTED_CONTEXT: True}``, or
#: ``load_config(data, redacted=True)``): the data is a redacted dump, in which a secret
#: given as exactly ``"***"`` is set but not shown. Only then are the checks that need
#: the secret's content (length, strength, format) skipped for that placeholder.
REDACTED_CONTEXT = "redacted"


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# Headers the gateway sets or strips itself: a claim forwarded in one of them would
# silently replace or remove what the gateway sends.
_GATEWAY_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-request-id",
    }
)


def check_forward_claims(value: dict[str, str]) -> dict[str, str]:
    for claim, header in value.items():
        if not claim:
            raise ValueError("claim names must not be empty")
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"{header!r} (for claim {claim!r}) is not a valid header name")
        if header.lower() in _GATEWAY_HEADERS or header.lower().startswith("x-forwarded-"):
            raise ValueError(f"{header!r} is managed by the gateway and cannot carry a claim")
    return value


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is too weak to sign tokens, or None. Never quotes the secret."""
    lowered = secret.lower()
    if lowered in _PLACEHOLDER_SECRETS or any(f in lowered for f in _PLACEHOLDER_FRAGMENTS):
        return "is a well-known placeholder; generate a random secret (e.g. openssl rand -hex 32)"
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"must be at least {MIN_SECRET_BYTES} bytes long"
    return None


def reveal_secret(value: SecretStr | None, info: SerializationInfo) -> str | None:
    """Serialise a secret: in clear only when the dump's context asks for it."""
    if value is None:
        return None
    context = info.context
    if isinstance(context, dict) and context.get("reveal_secrets"):
        return value.get_secret_value()
    return REDACTED


def is_redacted_placeholder(value: SecretStr | None, info: ValidationInfo) -> bool:
    """``value`` is the ``"***"`` placeholder of a redacted dump being validated as one."""
    context = info.context
    return (
        value is not None
        and isinstance(context, dict)
        and context.get(REDACTED_CONTEXT) is True
        and value.get_secret_value() == REDACTED
    )


class JwtConfig(KairosModel):
    """Token verification. Exactly one key source: ``secret``, ``public_key`` or ``jwks_url``.

    ``algorithms`` defaults to ``["HS256"]`` with a secret and ``["RS256"]`` otherwise;
    HMAC algorithms need the secret, asymmetric ones a public key or JWKS URL.
    """

    secret: SecretStr | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    algorithms: Annotated[list[JwtAlgorithm], Field(min_length=1)]
    issuer: str | None = None
    audience: str | list[str] | None = None
    required_claims: list[str] = Field(default_factory=list)
    leeway_s: Annotated[int, Field(ge=0, le=3600)] = 60
    #: Claims copied into request headers for the backend: claim name -> header name.
    forward_claims: dict[str, str] = Field(default_factory=dict)
    #: JWKS documents are cached this long unless the response's Cache-Control says less.
    jwks_cache_ttl_s: Annotated[float, Field(gt=0, le=86400)] = 300
    #: An unknown `kid` triggers a JWKS refresh at most this often.
    jwks_refresh_interval_s: Annotated[float, Field(ge=0, le=3600)] = 30
    jwks_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5
    #: Verified tokens kept (LRU); an entry never outlives the token's `exp`.
    cache_size: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000

    @field_validator("forward_claims")
    @classmethod
    def _forward_claims(cls, value: dict[str, str]) -> dict[str, str]:
        return check_forward_claims(value)

    @field_serializer("secret")
    def _dump_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)

    @model_validator(mode="before")
    @classmethod
    def _default_algorithms(cls, data: Any) -> Any:
        if isinstance(data, dict) and "algorithms" not in data:
            data = {**data, "algorithms": ["HS256"] if data.get("secret") else ["RS256"]}
        return data

    @field_validator("algorithms", mode="before")
    @classmethod
    def _no_none_algorithm(cls, value: object) -> object:
        if isinstance(value, list) and any(str(a).lower() == "none" for a in value):
            raise ValueError("'none' is never allowed: unsigned tokens would be accepted")
        return value

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ValueError("must be a string or a list of strings")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, value: str | None) -> str | None:
        if value is not None and "-----BEGIN" not in value:
            raise ValueError("must be a PEM-encoded public key ('-----BEGIN PUBLIC KEY-----...')")
        return value

    @model_validator(mode="after")
    def _key_matches_algorithms(self) -> JwtConfig:
        sources = [
            name
            for name, value in (
                ("secret", self.secret),
                ("public_key", self.public_key),
                ("jwks_url", self.jwks_url),
            )
            if value is not None
        ]
        if len(sources) != 1:
            given = ", ".join(sources) if sources else "none"
            raise ValueError(f"give exactly one of secret, public_key or jwks_url (given: {given})")
        hmac = sorted(set(self.algorithms) & HMAC_ALGORITHMS)
        asymmetric = sorted(set(self.algorithms) & ASYMMETRIC_ALGORITHMS)
        if self.secret is not None and asymmetric:
            raise ValueError(
                f"algorithms {', '.join(asymmetric)} need public_key or jwks_url, not secret"
            )
        if self.secret is None and hmac:
            raise ValueError(f"algorithms {', '.join(hmac)} need secret")
        return self
