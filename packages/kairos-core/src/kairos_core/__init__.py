"""Kairos core: configuration models, validation and the route table.

Pure: no I/O apart from `load_config_file`, no event loop.
"""

from .auth import JwtConfig
from .backend import Backend
from .config import (
    MAX_CONFIG_BYTES,
    GatewayConfig,
    config_to_json,
    load_config,
    load_config_file,
    load_router,
    redacted,
)
from .edge import CorsConfig, SecurityHeadersConfig, origin_pattern
from .errors import (
    ABSENT,
    BadRequest,
    CircuitOpen,
    ConfigError,
    FieldError,
    Forbidden,
    InvalidPath,
    KairosError,
    MethodNotAllowed,
    NoHealthyBackend,
    RouteNotFound,
    ServiceUnavailable,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from .paths import RESERVED_PATHS, RESERVED_PREFIXES, has_dot_segment
from .ratelimit import RateLimitConfig
from .resilience import (
    CircuitBreakerConfig,
    HealthCheckConfig,
    effective_circuit_breaker,
    effective_health_check,
)
from .route import (
    HTTP_METHODS,
    MAX_BODY_LIMIT,
    ClaimValue,
    RetryConfig,
    Router,
    RouteTimeouts,
    Timeouts,
    effective_timeouts,
)
from .routing import (
    BadPath,
    CompiledRoute,
    Match,
    MatchResult,
    MethodNotAllowedResult,
    NoRoute,
    RouteTable,
)

__version__ = "0.1.0"

__all__ = [
    "ABSENT",
    "HTTP_METHODS",
    "MAX_BODY_LIMIT",
    "MAX_CONFIG_BYTES",
    "RESERVED_PATHS",
    "RESERVED_PREFIXES",
    "Backend",
    "BadPath",
    "BadRequest",
    "CircuitBreakerConfig",
    "CircuitOpen",
    "ClaimValue",
    "CompiledRoute",
    "ConfigError",
    "CorsConfig",
    "FieldError",
    "Forbidden",
    "GatewayConfig",
    "HealthCheckConfig",
    "InvalidPath",
    "JwtConfig",
    "KairosError",
    "Match",
    "MatchResult",
    "MethodNotAllowed",
    "MethodNotAllowedResult",
    "NoHealthyBackend",
    "NoRoute",
    "RateLimitConfig",
    "RetryConfig",
    "RouteNotFound",
    "RouteTable",
    "RouteTimeouts",
    "Router",
    "SecurityHeadersConfig",
    "ServiceUnavailable",
    "Timeouts",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "config_to_json",
    "effective_circuit_breaker",
    "effective_health_check",
    "effective_timeouts",
    "has_dot_segment",
    "load_config",
    "load_config_file",
    "load_router",
    "origin_pattern",
    "redacted",
]
