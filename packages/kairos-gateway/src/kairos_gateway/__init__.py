"""Kairos gateway: the Tornado data plane.

Run it with `kairos-gateway` (see `cli`), or embed it::

    async with Gateway(load_config_file("config.json")) as gateway:
        ...
"""

__version__ = "0.1.0"

from .accesslog import AccessLog
from .app import Gateway
from .settings import GatewaySettings, SettingsError

__all__ = ["AccessLog", "Gateway", "GatewaySettings", "SettingsError", "__version__"]
