"""`RateLimitConfig`: the gateway-wide rate limit.

Accepts both the documented shape (``algorithm``, ``requests_per_second``,
``burst_size``) and kairos-rs's code shape (``window_type``, ``strategy``,
``requests_per_window``, ``window_duration``, ``burst_allowance``, ``enable_redis``,
``redis_key_prefix``); kairos-rs's CamelCase values are mapped to canonical ones.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    Field,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from ._model import KairosModel, aliased

__all__ = [
    "BATCHED_ALGORITHMS",
    "RateLimitAlgorithm",
    "RateLimitConfig",
    "client_key",
    "redact_url",
]

RateLimitAlgorithm = Literal["fixed_window", "sliding_window", "token_bucket"]
#: The algorithms ``sync: "batched"`` supports: both can hand out a chunk of requests
#: at once (a sliding window's chunk would age out piecewise, sub-window by sub-window).
BATCHED_ALGORITHMS = ("fixed_window", "token_bucket")

_KAIROS_RS_WINDOW_TYPES = {
    "FixedWindow": "fixed_window",
    "SlidingWindow": "sliding_window",
    "TokenBucket": "token_bucket",
}
_KAIROS_RS_STRATEGIES = {
    "PerIP": "ip",
    "PerUser": "user",
    "PerRoute": "route",
    "PerIPAndRoute": "ip_route",
    "PerUserAndRoute": "user_route",
}
_KEYS = ("ip", "user", "route", "ip_route", "user_route")
_POLICY_NAME = re.compile(r"[A-Za-z0-9_.:/{}*-]{1,64}")
_HEADER_KEY = re.compile(r"header:[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def client_key(value: object) -> str:
    """A rate limit's ``key`` setting (who a client is), kairos-rs's spellings mapped;
    raises `ValueError` listing the accepted values."""
    if isinstance(value, dict) and "Composite" in value:
        raise ValueError("the Composite strategy is not supported")
    if isinstance(value, str):
        value = _KAIROS_RS_STRATEGIES.get(value, value)
        if value in _KEYS or _HEADER_KEY.fullmatch(value):
            return value
    raise ValueError(f"must be one of: {', '.join(_KEYS)}, or header:<name>")


class RateLimitConfig(KairosModel):
    """Either ``requests_per_second``, or ``requests_per_window`` with ``window_seconds``."""

    algorithm: RateLimitAlgorithm = aliased("algorithm", "window_type", default="token_bucket")
    requests_per_second: Annotated[float, Field(gt=0)] | None = None
    burst_size: Annotated[int, Field(ge=0)] | None = aliased(
        "burst_size", "burst_allowance", default=None
    )
    requests_per_window: Annotated[int, Field(ge=1)] | None = None
    window_seconds: Annotated[float, Field(gt=0)] | None = aliased(
        "window_seconds", "window_duration", default=None
    )
    key: str = aliased("key", "strategy", default="ip")
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    key_prefix: str = aliased("key_prefix", "redis_key_prefix", default="kairos:rl:")
    #: Policy name in the RateLimit / RateLimit-Policy headers (default: "default" for
    #: the global limit, the route's path for a route's own).
    name: str | None = None
    #: Also send X-RateLimit-Limit / -Remaining / -Reset.
    legacy_headers: bool = False
    #: When Redis cannot be reached in time: let the request through, or refuse it (503).
    on_redis_error: Literal["allow", "deny"] = "allow"
    redis_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: "exact": one Redis call per request. "batched": each gateway leases chunks of
    #: requests (at most ``batch_size``) and answers from them without a round trip.
    sync: Literal["exact", "batched"] = "exact"
    #: Largest lease (batched only): the bound on a gateway's overshoot per key.
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: How long a lease (or a refusal) is used before Redis is asked again (batched only).
    sync_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000

    @property
    def window_s(self) -> float:
        """The window the limit is counted over (1 s for a per-second rate)."""
        return 1.0 if self.requests_per_second is not None else float(self.window_seconds or 1)

    @property
    def quota(self) -> float:
        """Requests allowed per window (before burst)."""
        if self.requests_per_second is not None:
            return self.requests_per_second
        return float(self.requests_per_window or 0)

    @model_validator(mode="before")
    @classmethod
    def _enable_redis(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "enable_redis" not in data:
            return data
        data = dict(data)
        enable = data.pop("enable_redis")
        if not isinstance(enable, bool):
            raise ValueError("enable_redis must be true or false")
        wanted = "redis" if enable else "memory"
        if data.setdefault("backend", wanted) != wanted:
            raise ValueError(f"enable_redis={str(enable).lower()} contradicts backend")
        return data

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, value: object) -> object:
        return _KAIROS_RS_WINDOW_TYPES.get(value, value) if isinstance(value, str) else value

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: object) -> object:
        return client_key(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _POLICY_NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters from letters, digits and _ . : / { } * -")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        try:
            _ = urlsplit(value).port  # a bad IPv6 literal or port raises here
        except ValueError as exc:
            raise ValueError(f"is not a valid URL ({exc})") from None
        return value

    @field_validator("sync")
    @classmethod
    def _sync(cls, value: str, info: ValidationInfo) -> str:
        if value != "batched":
            return value
        algorithm = info.data.get("algorithm")
        if algorithm is not None and algorithm not in BATCHED_ALGORITHMS:
            raise ValueError(
                f"'batched' supports algorithm {' or '.join(BATCHED_ALGORITHMS)}, "
                f"not {algorithm}; use sync 'exact'"
            )
        if info.data.get("backend", "memory") != "redis":
            raise ValueError("'batched' needs backend 'redis' (the memory store is exact)")
        return value

    @field_serializer("redis_url")
    def _dump_redis_url(self, value: str | None, info: SerializationInfo) -> str | None:
        context = info.context
        if value is None or (isinstance(context, dict) and context.get("reveal_secrets")):
            return value
        return redact_url(value)

    @model_validator(mode="after")
    def _rate_given_once(self) -> RateLimitConfig:
        per_second = self.requests_per_second is not None
        windowed = self.requests_per_window is not None or self.window_seconds is not None
        if per_second and windowed:
            raise ValueError(
                "give either requests_per_second, or requests_per_window with "
                "window_seconds, not both"
            )
        if not per_second and (self.requests_per_window is None or self.window_seconds is None):
            raise ValueError(
                "give either requests_per_second, or both requests_per_window and window_seconds"
            )
        if self.backend == "redis" and self.redis_url is None:
            raise ValueError("backend 'redis' needs redis_url")
        return self
