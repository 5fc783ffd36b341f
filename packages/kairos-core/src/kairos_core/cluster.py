"""`ClusterConfig`: several gateway nodes sharing their route configuration through Redis.

With a ``cluster`` block (or ``KAIROS_REDIS_URL``) the configuration lives in Redis,
versioned; every node applies the newest version, and a change made through any node's
management API is stored there first. The block itself is read at start-up only and is
never shared: each node keeps its own (nodes may reach Redis under different names).

`ClusterStatus` is how `/ready` and `GET /api/config/status` report the node's link to
Redis.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    field_serializer,
    field_validator,
)

from ._model import KairosModel
from .ratelimit import redact_url

__all__ = ["ClusterConfig", "ClusterStatus"]

_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")


class ClusterConfig(KairosModel):
    """Where the shared configuration lives, and how long to wait for it."""

    #: ``redis://``, ``rediss://`` or ``unix://``; ``KAIROS_REDIS_URL`` overrides it.
    redis_url: str
    #: Prefix of every key and channel the cluster uses (one Redis may hold several).
    key_prefix: str = "kairos:"
    #: Tell the other nodes when a backend's circuit breaker opens, so they skip it too.
    share_breakers: bool = False
    #: Longest wait for one Redis call (connect included).
    timeout_ms: Annotated[int, Field(ge=10, le=10_000)] = 500
    #: How often each node checks the stored version (the fallback to the published
    #: change notices; also how soon a node notices Redis is back).
    poll_interval_ms: Annotated[int, Field(ge=50, le=10_000)] = 500

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("must be 1-64 characters from letters, digits and _ . : { } -")
        return value

    @field_serializer("redis_url")
    def _dump_redis_url(self, value: str, info: SerializationInfo) -> str:
        context = info.context
        if isinstance(context, dict) and context.get("reveal_secrets"):
            return value
        return redact_url(value)


class ClusterStatus(BaseModel):
    """This node's view of the cluster (absent when the gateway runs on its own)."""

    model_config = ConfigDict(extra="forbid")

    #: ``connected``: Redis answers; ``degraded``: it does not, and the node serves the
    #: last configuration it applied (management changes get 503 meanwhile).
    state: Literal["connected", "degraded"]
    redis_url: str
    node_id: str
    #: The cluster version this node runs (0: none applied yet, e.g. Redis was never
    #: reached since start-up and the node serves its config file).
    applied_version: int
    #: The newest version seen in Redis (None: not read yet).
    stored_version: int | None = None
    #: Seconds since Redis last answered (None: never).
    last_contact_s: float | None = None
    #: Why Redis is unreachable, or why the stored version could not be applied.
    error: str | None = None
    share_breakers: bool = False
