"""Several gateway nodes sharing their configuration (and optionally breaker state)
through Redis: `ClusterNode` follows and changes the shared configuration, `ConfigStore`
is its Redis side, `BreakerShare` spreads circuit-breaker openings."""

from .breakers import BreakerShare
from .node import CannotApply, ClusterNode, shared_json, with_redis_url
from .store import ConfigStore, StaleVersion, StoreUnavailable

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
