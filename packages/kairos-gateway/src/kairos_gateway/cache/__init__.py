"""The response cache's stores and the RFC 9111 rules it follows (see docs/cache.md).

Stores are shared: every route (and every configuration snapshot) whose ``cache``
settings name the same store gets the same `SharedCache`, so a reload keeps what is
cached. `caches_of` finds the stores a snapshot's routes use (purging, metrics).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Iterable
from typing import Any

from kairos_core.cache import MemoryStore, RedisStore

from .store import CacheStats, Entry, MemoryCache, Purge, Store

__all__ = [
    "CacheStats",
    "Entry",
    "MemoryCache",
    "Purge",
    "SharedCache",
    "Store",
    "caches_of",
    "close_caches",
    "shared_cache",
]


class SharedCache:
    """One store, and the misses under way for each of its keys (coalescing)."""

    __slots__ = ("__weakref__", "_tasks", "describe", "inflight", "store")

    def __init__(self, store: Any, describe: str) -> None:
        self.store: Store = store
        self.describe = describe
        #: Primary key -> resolved when the first miss for it has been stored (or not).
        self.inflight: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def background(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` (a store write) without making the request wait for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        close = getattr(self.store, "close", None)
        if close is not None:
            await close()


_LIVE: weakref.WeakValueDictionary[str, SharedCache] = weakref.WeakValueDictionary()


def shared_cache(config: MemoryStore | RedisStore) -> SharedCache:
    """The store ``config`` describes, shared with every policy that names the same."""
    ident = config.model_dump_json()
    cache = _LIVE.get(ident)
    if cache is None:
        if isinstance(config, MemoryStore):
            store: Any = MemoryCache(config.max_bytes)
            describe = "memory"
        else:
            from .redis_store import RedisCache

            store = RedisCache(config)
            describe = "redis"
        cache = _LIVE[ident] = SharedCache(store, describe)
    return cache


def caches_of(chains: Iterable[Any]) -> list[SharedCache]:
    """The stores the cache policies of these chains use (a snapshot's routes' chains),
    each once."""
    found: dict[int, SharedCache] = {}
    for chain in chains:
        for policy in chain.policies:
            cache = getattr(policy, "cache", None)
            if isinstance(cache, SharedCache):
                found.setdefault(id(cache), cache)
    return list(found.values())


async def close_caches(caches: Iterable[SharedCache]) -> None:
    """Let pending store writes finish (briefly) and close the stores' connections
    (they reconnect if used again): a gateway stopping leaves none open."""
    for cache in caches:
        await cache.aclose()
