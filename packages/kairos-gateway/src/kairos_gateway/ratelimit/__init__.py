"""Rate limiting: limiters over a memory or Redis store, client keys and headers.

The maths is `kairos_core.limits`; this package keeps the states.
"""

from .limiter import RateLimiter, RateLimitStore, limit_key
from .memory import MemoryStore
from .redis_store import RedisStore
from .registry import RateLimiters

__all__ = [
    "MemoryStore",
    "RateLimitStore",
    "RateLimiter",
    "RateLimiters",
    "RedisStore",
    "limit_key",
]
