"""Pooled keep-alive HTTP/1.1 client for upstream requests (asyncio.Protocol + llhttp)."""

from .endpoint import Endpoint
from .errors import (
    StaleConnection,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamTLSError,
)
from .pool import PoolStats, UpstreamPool
from .response import UpstreamResponse

__all__ = [
    "Endpoint",
    "PoolStats",
    "StaleConnection",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTLSError",
    "UpstreamTimeout",
]
