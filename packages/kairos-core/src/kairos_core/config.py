"""`GatewayConfig`, the whole configuration, and how to load and write it.

`load_config` is the front door: it returns a valid `GatewayConfig` or raises one
`ConfigError` listing every problem. (Calling ``GatewayConfig.model_validate``
directly raises pydantic's `ValidationError` for per-field problems and
`ConfigError` for the rules spanning routes.)
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_serializer,
    model_validator,
)

from ._model import KairosModel
from ._translate import field_errors
from .admin import AdminConfig
from .auth import REDACTED_CONTEXT, JwtConfig, reveal_secret
from .cluster import ClusterConfig
from .edge import CorsConfig, SecurityHeadersConfig
from .errors import ConfigError, FieldError
from .identity import duplicate_name_errors
from .listen import ListenConfig
from .plugins import PluginConfig, PluginEntries, effective_plugins
from .ratelimit import RateLimitConfig
from .resilience import (
    CircuitBreakerConfig,
    ConnectionLimits,
    HealthCheckConfig,
    OutlierDetectionConfig,
)
from .route import MAX_BODY_LIMIT, Router, Timeouts
from .tracing import TracingConfig
from .validation import auth_errors, duplicate_route_errors

__all__ = [
    "MAX_CONFIG_BYTES",
    "GatewayConfig",
    "config_to_json",
    "load_config",
    "load_config_file",
    "load_router",
    "redacted",
]

MAX_CONFIG_BYTES = 10 * 1024 * 1024
_KEY_FIELDS = frozenset({"secret", "public_key", "jwks_url"})


def _network(value: object) -> object:
    """A CIDR string (a bare address is a single host) to a network."""
    if not isinstance(value, str):
        return value
    try:
        return ip_network(value.strip(), strict=True)
    except ValueError:
        raise ValueError(
            "must be an IP address or CIDR network with no host bits set, e.g. '10.0.0.0/8'"
        ) from None


class GatewayConfig(KairosModel):
    version: Annotated[int, Field(ge=1)] = 1
    jwt_secret: SecretStr | None = None
    jwt: JwtConfig | None = None
    rate_limit: RateLimitConfig | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    #: Upstream connections per backend and the queue for them (backends may override).
    connection_limits: ConnectionLimits = Field(default_factory=ConnectionLimits)
    #: Passive health: backends failing real requests are ejected for a while.
    outlier_detection: OutlierDetectionConfig = Field(default_factory=OutlierDetectionConfig)
    trusted_proxies: list[Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]] = Field(
        default_factory=list
    )
    #: Send backends an RFC 7239 Forwarded header of the gateway's own (for, proto, host),
    #: appended to a trusted proxy's; off: Forwarded passes only from a trusted proxy.
    forwarded_header: bool = False
    cors: CorsConfig | None = None
    #: Largest request body, in bytes (routes may set their own).
    max_body_size: Annotated[int, Field(ge=0, le=MAX_BODY_LIMIT)] = 10 * 1024 * 1024
    #: Request body bytes read from a client ahead of the backend (a body up to this
    #: size with a Content-Length is read whole and sent with the request head).
    request_buffer_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: Request body bytes kept to send a request again (retry); routes may set their own.
    replay_buffer_size: Annotated[int, Field(ge=0, le=MAX_BODY_LIMIT)] = 64 * 1024
    security_headers: SecurityHeadersConfig = Field(default_factory=SecurityHeadersConfig)
    routers: list[Router]
    #: Management API access and listener.
    admin: AdminConfig = Field(default_factory=AdminConfig)
    #: TLS termination and the HTTP redirect listener (read at start-up, certificates
    #: reloaded while serving).
    listen: ListenConfig = Field(default_factory=ListenConfig)
    #: Watch the config file and apply edits to it (SIGHUP and the API reload anyway).
    hot_reload: bool = True
    #: Nodes sharing the configuration through Redis (read at start-up; never shared).
    cluster: ClusterConfig | None = None
    #: Plugins applied to every route (a route's own entries override them by name).
    plugins: PluginEntries | None = None
    #: W3C trace context to backends, and span export (read at start-up).
    tracing: TracingConfig | None = None

    @field_serializer("jwt_secret")
    def _dump_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)

    @model_validator(mode="before")
    @classmethod
    def _secret_into_jwt_block(cls, data: Any) -> Any:
        """A ``jwt`` block without a key takes the top-level ``jwt_secret`` (kairos-rs mix)."""
        if not isinstance(data, dict):
            return data
        block, secret = data.get("jwt"), data.get("jwt_secret")
        if isinstance(block, dict) and secret is not None and not _KEY_FIELDS & block.keys():
            data = {**data, "jwt": {**block, "secret": secret}}
        return data

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> GatewayConfig:
        context = info.context
        redacted = isinstance(context, dict) and context.get(REDACTED_CONTEXT) is True
        errors = [
            *duplicate_route_errors(self.routers),
            *duplicate_name_errors(self.routers),
            *auth_errors(self, redacted=redacted),
        ]
        if errors:
            raise ConfigError(errors)
        return self

    def rate_limit_for(self, route: Router) -> RateLimitConfig | None:
        """The route's own limit, none if it opts out, else the top-level one."""
        if route.rate_limit is not None or route.opts_out_of("rate_limit"):
            return route.rate_limit
        return self.rate_limit

    def cors_for(self, route: Router) -> CorsConfig | None:
        """The route's own CORS policy, none if it opts out, else the top-level one."""
        if route.cors is not None or route.opts_out_of("cors"):
            return route.cors
        return self.cors

    def plugins_for(self, index: int) -> list[tuple[tuple[str | int, ...], PluginConfig]]:
        """The enabled plugin entries of route ``index``, each with its field path."""
        return effective_plugins(self.plugins, self.routers[index].plugins, index)

    def max_body_size_for(self, route: Router) -> int:
        return self.max_body_size if route.max_body_size is None else route.max_body_size

    def replay_buffer_size_for(self, route: Router) -> int:
        own = route.replay_buffer_size
        return self.replay_buffer_size if own is None else own

    def effective_jwt(self) -> JwtConfig | None:
        """The JWT settings to verify with: ``jwt``, or one built from ``jwt_secret``."""
        if self.jwt is None and self.jwt_secret is not None:
            return JwtConfig(secret=self.jwt_secret, algorithms=["HS256"])
        return self.jwt


def load_config(data: object, *, redacted: bool = False) -> GatewayConfig:
    """Validate parsed JSON; raises `ConfigError` listing every problem.

    ``redacted=True`` reads a redacted dump (what `redacted` and ``GET /api/config``
    give): a secret shown as exactly ``"***"`` is accepted as "set, value unknown", so
    the checks on its length or strength are skipped for it; every other rule applies.
    Such a config is for showing and for sending back to the gateway (which keeps the
    current secret for each ``"***"``), never for verifying tokens with.
    """
    if not isinstance(data, dict):
        raise ConfigError([FieldError((), "the configuration must be a JSON object")])
    try:
        context = {REDACTED_CONTEXT: True} if redacted else None
        return GatewayConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(field_errors(exc, GatewayConfig)) from None


def load_router(data: object) -> Router:
    """Validate one route on its own (locations relative to the route); raises `ConfigError`.

    Rules spanning routes (duplicates, JWT key present) need the whole configuration.
    """
    if not isinstance(data, dict):
        raise ConfigError([FieldError((), "a route must be a JSON object")])
    try:
        return Router.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(field_errors(exc, Router)) from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_config_file(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read, parse and validate a JSON configuration file (at most 10 MB)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [FieldError((), f"cannot read {os.fspath(path)!r}: {exc.strerror}")]
        ) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([FieldError((), f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError as exc:
        raise ConfigError([FieldError((), f"not UTF-8 text (byte {exc.start})")]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [FieldError((), f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except ValueError as exc:
        raise ConfigError([FieldError((), f"invalid JSON: {exc}")]) from None
    return load_config(data)


def config_to_json(config: GatewayConfig) -> str:
    """Canonical JSON for the config file: canonical names, secrets in clear.

    Fields left at None are omitted; loading the result gives an equal config.
    """
    return config.model_dump_json(indent=2, exclude_none=True, context={"reveal_secrets": True})


def redacted(config: GatewayConfig) -> dict[str, Any]:
    """A JSON-ready dump safe to show: secrets as ``***``, passwords in URLs masked."""
    return config.model_dump(mode="json", exclude_none=True)
