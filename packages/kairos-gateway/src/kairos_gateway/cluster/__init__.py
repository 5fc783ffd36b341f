"""Several gateway nodes sharing their configuration (and optionally breaker state)
through Redis: `ClusterNode` follows and changes the shared configuration, `ConfigStore`
is its Redis side, `SharedHistory` reads the cluster's audit trail and kept versions
(written with each change), `BreakerShare` spreads circuit-breaker openings.

The Redis-backed classes load on first use (module ``__getattr__``), so a gateway
without a ``cluster`` block never imports redis-py.
"""

from typing import TYPE_CHECKING, Any

from .base import CannotApply, StaleVersion, StoreUnavailable, shared_json, with_redis_url

if TYPE_CHECKING:
    from .breakers import BreakerShare
    from .node import ClusterNode
    from .store import ConfigStore

__all__ = [
    "BreakerShare",
    "CannotApply",
    "ClusterNode",
    "ConfigStore",
    "StaleVersion",
    "StoreUnavailable",
    "shared_json",
    "with_redis_url",
]

_LAZY = {"BreakerShare": "breakers", "ClusterNode": "node", "ConfigStore": "store"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
