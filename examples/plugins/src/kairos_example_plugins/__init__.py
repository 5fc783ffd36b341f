"""Example plugins for the Kairos gateway, and the worked example of docs/plugins.md.

Installed, they register two plugins in the ``kairos.plugins`` entry-point group:

``api-key``      401 unless the request carries a configured API key (priority 1500)
``add-headers``  set, add or remove request and response headers (priority 800)
"""

__version__ = "0.1.0"

from .add_headers import AddHeaders, AddHeadersConfig, HeaderEdits
from .add_headers import plugin as add_headers
from .api_key import ApiKey, ApiKeyConfig, ApiKeyRequired, digest_of
from .api_key import plugin as api_key

__all__ = [
    "AddHeaders",
    "AddHeadersConfig",
    "ApiKey",
    "ApiKeyConfig",
    "ApiKeyRequired",
    "HeaderEdits",
    "__version__",
    "add_headers",
    "api_key",
    "digest_of",
]
