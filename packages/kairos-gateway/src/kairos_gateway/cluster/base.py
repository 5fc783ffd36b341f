"""The parts of cluster mode that do not need Redis: errors and config helpers.

Kept apart so a gateway without a ``cluster`` block never imports redis-py.
"""

from __future__ import annotations

from kairos_core import ClusterConfig, GatewayConfig, config_to_json

__all__ = [
    "CannotApply",
    "StaleVersion",
    "StoreUnavailable",
    "shared_json",
    "with_redis_url",
]


class StoreUnavailable(Exception):
    """Redis did not answer in time, refused the connection, or answered with an error."""


class StaleVersion(Exception):
    """The stored version is not the one the write expected."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"the stored version is {stored}")
        self.stored = stored


class CannotApply(Exception):
    """This node cannot apply the cluster's newest version (it is invalid here)."""


def shared_json(config: GatewayConfig) -> str:
    """What the cluster stores: the config without this node's own ``cluster`` block."""
    return config_to_json(config.model_copy(update={"cluster": None}))


def with_redis_url(config: GatewayConfig, redis_url: str | None) -> GatewayConfig:
    """``config`` with ``KAIROS_REDIS_URL`` applied (creates or amends ``cluster``)."""
    if redis_url is None:
        return config
    block = config.cluster
    cluster = (
        ClusterConfig(redis_url=redis_url)
        if block is None
        else block.model_copy(update={"redis_url": redis_url})
    )
    return config.model_copy(update={"cluster": cluster})
