"""Rate limiting: limiters over a memory or Redis store, client keys and headers.

The maths is `kairos_core.limits`; this package keeps the states.
"""

from typing import TYPE_CHECKING, Any

from .limiter import RateLimiter, RateLimitStore, limit_key
from .memory import MemoryStore
from .registry import RateLimiters

if TYPE_CHECKING:
    from .batched import BatchedStore
    from .redis_store import RedisStore

__all__ = [
    "BatchedStore",
    "MemoryStore",
    "RateLimitStore",
    "RateLimiter",
    "RateLimiters",
    "RedisStore",
    "limit_key",
]


def __getattr__(name: str) -> Any:
    # The Redis stores load on first use, so a gateway without Redis never imports redis-py.
    if name == "RedisStore":
        from .redis_store import RedisStore

        return RedisStore
    if name == "BatchedStore":
        from .batched import BatchedStore

        return BatchedStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
