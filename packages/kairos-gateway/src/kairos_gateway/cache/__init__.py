"""The response cache's stores and the RFC 9111 rules it follows (see docs/cache.md).

Stores are shared: every route (and every configuration snapshot) whose ``cache``
settings name the same store gets the same `SharedCache`, so a reload keeps what is
cached. `caches_of` finds the stores a snapshot's routes use (purging, metrics).

Background revalidations (``stale-while-revalidate``) run as tasks of the store's
`SharedCache`: one per key at a time (the key's entry in ``inflight``), at most
`MAX_REVALIDATIONS` in the whole process, cancelled when the gateway stops.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Iterable
from typing import Any

from kairos_core.cache import MemoryStore, RedisStore

from .store import CacheStats, Entry, MemoryCache, Purge, Store

__all__ = [
    "MAX_REVALIDATIONS",
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


#: Background revalidations running at once in a process, all stores together; past
#: it, a request for a stale entry revalidates it itself (and waits), as without
#: ``stale-while-revalidate``.
MAX_REVALIDATIONS = 32

_revalidating: set[asyncio.Task[Any]] = set()


class SharedCache:
    """One store, and the misses under way for each of its keys (coalescing)."""

    __slots__ = ("__weakref__", "_revalidations", "_tasks", "describe", "inflight", "store")

    def __init__(self, store: Any, describe: str) -> None:
        self.store: Store = store
        self.describe = describe
        #: Primary key -> resolved when the first miss for it has been stored (or not).
        self.inflight: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._revalidations: set[asyncio.Task[Any]] = set()

    def revalidate(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run ``work`` (a background revalidation) unless the process runs
        `MAX_REVALIDATIONS` already (then None, and ``work`` is closed unstarted)."""
        if len(_revalidating) >= MAX_REVALIDATIONS:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        for running in (_revalidating, self._revalidations):
            running.add(task)
            task.add_done_callback(running.discard)
        return task

    def background(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` (a store write) without making the request wait for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        # A revalidation may wait for a slow backend: stop it (the stale entry stays).
        revalidations = list(self._revalidations)
        for task in revalidations:
            task.cancel()
        if revalidations:
            await asyncio.wait(revalidations, timeout=1.0)
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
