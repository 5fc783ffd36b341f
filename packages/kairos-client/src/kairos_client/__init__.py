"""Kairos client: an async SDK for the management API of a Kairos gateway.

    async with KairosClient("http://localhost:5900", token="...") as client:
        print((await client.health()).version)

Results are kairos-core models (`Router`, `GatewayConfig`, `ConfigStatus`, ...), and
`client.events()` the live events (`EventStream` of `GatewayEvent`); errors
are `KairosClientError` subclasses (see `kairos_client.errors`); `transport` is the seam
to test code that uses the client without a gateway.
"""

from ._version import __version__
from .client import DEFAULT_URL, KairosClient, RouteInput, Versioned
from .errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    GatewayUnavailable,
    InvalidResponse,
    KairosClientError,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationFailed,
)
from .events import EventStream, GatewayEvent
from .transport import (
    AiohttpTransport,
    MockTransport,
    RawResponse,
    RawStream,
    StreamingTransport,
    Transport,
    TransportRequest,
)

__all__ = [
    "DEFAULT_URL",
    "AiohttpTransport",
    "ApiError",
    "BadRequest",
    "Conflict",
    "EventStream",
    "Forbidden",
    "GatewayEvent",
    "GatewayTimeout",
    "GatewayUnavailable",
    "InvalidResponse",
    "KairosClient",
    "KairosClientError",
    "MockTransport",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "RawResponse",
    "RawStream",
    "RouteInput",
    "ServerError",
    "StreamingTransport",
    "Transport",
    "TransportRequest",
    "Unauthorized",
    "ValidationFailed",
    "Versioned",
    "__version__",
]
