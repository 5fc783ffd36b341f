"""`RateLimiters`: builds one `RateLimiter` per effective config and owns the stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kairos_core import RateLimitConfig

from .limiter import RateLimiter, RateLimitStore
from .memory import MemoryStore

if TYPE_CHECKING:
    from .batched import BatchedStore
    from .redis_store import RedisStore

__all__ = ["RateLimiters"]


class RateLimiters:
    """One memory store shared by every memory-backed limiter (one cap for the
    process), one `RedisStore` (one pool) per distinct Redis setting, and over it one
    `BatchedStore` per distinct lease setting (``sync: "batched"``)."""

    def __init__(self, memory: MemoryStore | None = None) -> None:
        self.memory = memory if memory is not None else MemoryStore()
        self.redis: dict[tuple[str, str, int, str], RedisStore] = {}
        self.batched: dict[tuple[tuple[str, str, int, str], int, int], BatchedStore] = {}
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def get(self, config: RateLimitConfig, *, name: str = "default") -> RateLimiter:
        """The limiter for ``config``; ``name`` is the policy name when the config
        has none ("default" for the global limit, the route's path for a route's)."""
        cache_key = (config.model_dump_json(context={"reveal_secrets": True}), name)
        limiter = self._limiters.get(cache_key)
        if limiter is None:
            limiter = RateLimiter(config, self._store(config), name=name)
            self._limiters[cache_key] = limiter
        return limiter

    def _store(self, config: RateLimitConfig) -> RateLimitStore:
        if config.backend == "memory" or config.redis_url is None:
            return self.memory
        setting = (
            config.redis_url,
            config.key_prefix,
            config.redis_timeout_ms,
            config.on_redis_error,
        )
        store = self.redis.get(setting)
        if store is None:
            from .redis_store import RedisStore  # redis-py loads only when a limit uses it

            store = RedisStore(
                config.redis_url,
                key_prefix=config.key_prefix,
                timeout_ms=config.redis_timeout_ms,
                on_error=config.on_redis_error,
            )
            self.redis[setting] = store
        if config.sync == "exact":
            return store
        lease_setting = (setting, config.batch_size, config.sync_interval_ms)
        batched = self.batched.get(lease_setting)
        if batched is None:
            from .batched import BatchedStore

            batched = BatchedStore(
                store,
                batch_size=config.batch_size,
                sync_interval_s=config.sync_interval_ms / 1000,
            )
            self.batched[lease_setting] = batched
        return batched

    @property
    def store_errors(self) -> int:
        """Checks answered by a fallback because Redis failed, over all Redis stores."""
        return sum(store.errors for store in self.redis.values())

    async def aclose(self) -> None:
        for batched in self.batched.values():  # before the Redis stores they lease from
            await batched.aclose()
        for store in self.redis.values():
            await store.aclose()
        await self.memory.aclose()
