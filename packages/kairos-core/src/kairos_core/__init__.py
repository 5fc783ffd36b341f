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
from .errors import (
    ABSENT,
    BadRequest,
    ConfigError,
    FieldError,
    InvalidPath,
    KairosError,
    MethodNotAllowed,
    RouteNotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from .paths import RESERVED_PATHS, RESERVED_PREFIXES, has_dot_segment
from .ratelimit import RateLimitConfig
from .route import (
    HTTP_METHODS,
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
    "MAX_CONFIG_BYTES",
    "RESERVED_PATHS",
    "RESERVED_PREFIXES",
    "Backend",
    "BadPath",
    "BadRequest",
    "CompiledRoute",
    "ConfigError",
    "FieldError",
    "GatewayConfig",
    "InvalidPath",
    "JwtConfig",
    "KairosError",
    "Match",
    "MatchResult",
    "MethodNotAllowed",
    "MethodNotAllowedResult",
    "NoRoute",
    "RateLimitConfig",
    "RetryConfig",
    "RouteNotFound",
    "RouteTable",
    "RouteTimeouts",
    "Router",
    "ServiceUnavailable",
    "Timeouts",
    "UpstreamError",
    "UpstreamTimeout",
    "config_to_json",
    "effective_timeouts",
    "has_dot_segment",
    "load_config",
    "load_config_file",
    "load_router",
    "redacted",
]
