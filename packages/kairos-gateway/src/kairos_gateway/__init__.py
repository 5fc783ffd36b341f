"""Kairos gateway: the Tornado data plane.

Run it with `kairos-gateway` (see `cli`), or embed it::

    async with Gateway(load_config_file("config.json")) as gateway:
        ...

Extend it with plugins (see docs/plugins.md): a `Plugin` registered in the
``kairos.plugins`` entry-point group builds a `Policy` that acts in the phases of
the request path it declares.
"""

from ._version import __version__
from .accesslog import AccessLog
from .app import Gateway
from .chain import Policy, Request, ResponseHead, UpstreamRequest
from .messages import Response, StreamedResponse
from .plugins import Plugin, PluginRegistry
from .runtime import Runtime
from .settings import GatewaySettings, SettingsError

__all__ = [
    "AccessLog",
    "Gateway",
    "GatewaySettings",
    "Plugin",
    "PluginRegistry",
    "Policy",
    "Request",
    "Response",
    "ResponseHead",
    "Runtime",
    "SettingsError",
    "StreamedResponse",
    "UpstreamRequest",
    "__version__",
]
