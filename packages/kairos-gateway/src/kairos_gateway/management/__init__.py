"""The management API (`/api/...`): routes, configuration, backends, metrics for the UI.

`ManagementApi.handle` takes one buffered `ApiRequest` and returns an `ApiResponse`;
the request path (`exchange`) buffers the body, calls it, and sends the answer.
Access control (`access.authorize`) applies to every call.
"""

from .api import ManagementApi
from .http import MAX_API_BODY, ApiRequest, ApiResponse

__all__ = ["MAX_API_BODY", "ApiRequest", "ApiResponse", "ManagementApi"]
