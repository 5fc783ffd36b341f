"""Pooled keep-alive HTTP/1.1 client for upstream requests (asyncio.Protocol + llhttp)."""

from .endpoint import Endpoint
from .errors import (
    RequestBodyFailed,
    StaleConnection,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamSaturated,
    UpstreamTimeout,
    UpstreamTLSError,
)
from .pool import EndpointStats, PoolLimits, PoolStats, UpstreamPool
from .request import BodySource
from .response import UpstreamResponse

__all__ = [
    "BodySource",
    "Endpoint",
    "EndpointStats",
    "PoolLimits",
    "PoolStats",
    "RequestBodyFailed",
    "StaleConnection",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamSaturated",
    "UpstreamTLSError",
    "UpstreamTimeout",
]
