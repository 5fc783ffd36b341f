"""`RateLimiter`: one effective rate-limit config applied through a store; client keys
(`limit_key`) and the response fields (draft-ietf-httpapi-ratelimit-headers-11)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Protocol

from kairos_core import Decision, Limit, RateLimitConfig

__all__ = ["RateLimitStore", "RateLimiter", "limit_key"]

#: Longer key parts (a header value, a user id) are hashed: the key space stays bounded
#: in bytes even when a client chooses the values.
_MAX_PART = 128
#: Float noise must not turn a reset of exactly 2 s into "3".
_ROUNDING_SLACK = 1e-6


class RateLimitStore(Protocol):
    def check_nowait(self, key: str, limit: Limit) -> Decision | None:
        """The decision now, or None when the store must be awaited."""

    async def check(self, key: str, limit: Limit) -> Decision: ...

    async def aclose(self) -> None: ...


class RateLimiter:
    """Applies one config. Keys are scoped by algorithm and policy name, so limiters
    sharing a store (or a Redis) count separately unless they share a name."""

    def __init__(
        self, config: RateLimitConfig, store: RateLimitStore, *, name: str = "default"
    ) -> None:
        self.config = config
        self.store = store
        self.limit = Limit.from_config(config)
        self.name = config.name or name
        self._scope = f"{self.limit.algorithm}:{self.name}:"
        quota, window = self.limit.policy()
        self.quota = quota
        self._policy = ("RateLimit-Policy", f"{_sf_string(self.name)};q={quota};w={window}")

    def check_nowait(self, key: str) -> Decision | None:
        """The decision without a coroutine when the store allows (memory), else None:
        then ``await check(key)``."""
        return self.store.check_nowait(self._scope + key, self.limit)

    async def check(self, key: str) -> Decision:
        """Count one request for ``key`` (from `limit_key`). Never raises: a store
        failure gives the configured fallback with ``store_error`` set."""
        return await self.store.check(self._scope + key, self.limit)

    def headers(self, decision: Decision) -> list[tuple[str, str]]:
        """The response fields for ``decision``: RateLimit-Policy and RateLimit, the
        X-RateLimit-* trio with ``legacy_headers``, Retry-After on a denial. After a
        store failure only the policy (and Retry-After) is known."""
        out = [self._policy]
        if not decision.store_error:
            remaining = max(0, decision.remaining)
            reset = _whole_seconds(decision.reset_after_s)
            out.append(("RateLimit", f"{_sf_string(self.name)};r={remaining};t={reset}"))
            if self.config.legacy_headers:
                out += [
                    ("X-RateLimit-Limit", str(self.quota)),
                    ("X-RateLimit-Remaining", str(remaining)),
                    ("X-RateLimit-Reset", str(reset)),
                ]
        if not decision.allowed:
            out.append(("Retry-After", str(max(1, _whole_seconds(decision.retry_after_s)))))
        return out


def limit_key(
    key: str,
    *,
    client_ip: str,
    user: str | None = None,
    route_template: str = "",
    headers: Mapping[str, str] | None = None,
) -> str:
    """The client key for the config's ``key`` setting.

    ``user`` is the authenticated subject (JWT ``sub``), None when the request is not
    authenticated: ``user`` keys then fall back to the client address, as does
    ``header:<name>`` when the header is absent. ``headers`` should look names up
    case-insensitively (Tornado's ``HTTPHeaders`` does).
    """
    ip = f"ip:{client_ip}"
    who = f"user:{_bounded(user)}" if user else ip
    route = f"route:{route_template}"
    if key == "ip":
        return ip
    if key == "user":
        return who
    if key == "route":
        return route
    if key == "ip_route":
        return f"{ip}|{route}"
    if key == "user_route":
        return f"{who}|{route}"
    if key.startswith("header:"):
        value = headers.get(key[len("header:") :]) if headers is not None else None
        return f"header:{_bounded(value)}" if value else ip
    raise ValueError(f"unknown rate-limit key {key!r}")


def _bounded(part: str) -> str:
    if len(part) <= _MAX_PART:
        return part
    return "#" + hashlib.blake2b(part.encode(), digest_size=16).hexdigest()


def _whole_seconds(seconds: float) -> int:
    return max(0, math.ceil(seconds - _ROUNDING_SLACK))


def _sf_string(value: str) -> str:
    """An RFC 8941 sf-string (the config's name pattern excludes the rest of ASCII)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
