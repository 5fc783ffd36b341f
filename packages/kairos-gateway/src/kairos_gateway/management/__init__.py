"""The management API (`/api/...`): routes, configuration, backends, metrics for the UI.

`ManagementApi.handle` takes one buffered `ApiRequest` and returns an `ApiResponse`;
the request path (`exchange`) buffers the body, calls it, and sends the answer.
Access control (`access.authorize`) applies to every call.
"""

from ..messages import MAX_API_BODY, ApiRequest, ApiResponse
from .api import ManagementApi
from .history import MetricsSampler
from .live import LiveConfig

__all__ = [
    "MAX_API_BODY",
    "ApiRequest",
    "ApiResponse",
    "LiveConfig",
    "ManagementApi",
    "MetricsSampler",
]
