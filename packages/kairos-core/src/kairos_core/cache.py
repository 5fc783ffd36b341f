"""Settings of the bundled ``cache`` plugin: an RFC 9111 shared cache in front of a route.

Enabled like any plugin (``plugins: [{"name": "cache", "config": {...}}]``, top level or
per route). See docs/cache.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._model import KairosModel

__all__ = [
    "CacheConfig",
    "CacheKey",
    "CachePurged",
    "CacheStatus",
    "CacheStoreStats",
    "MemoryStore",
    "RedisStore",
]

_HEADER = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=128)]


class CacheKey(KairosModel):
    """What tells two requests apart (besides the response's ``Vary``)."""

    #: The ``Host`` header is part of the key (two sites behind one route stay apart).
    host: bool = True
    #: Only these query parameters are in the key (sorted); None keeps the whole query,
    #: its parameters sorted.
    query: list[Annotated[str, Field(max_length=256)]] | None = None
    #: Request headers whose values are in the key (e.g. ``X-Tenant``).
    headers: list[_HEADER] = Field(default_factory=list, max_length=32)
    #: The key includes the caller's identity (``sub`` of the verified JWT, else the
    #: ``Authorization`` header): responses to requests with credentials are then cached
    #: per caller, even without ``public``.
    user: bool = False


class MemoryStore(KairosModel):
    """In the gateway process: least recently used entries go first."""

    type: Literal["memory"] = "memory"
    #: The whole store (bodies and headers) stays under this many bytes.
    max_bytes: Annotated[int, Field(ge=1024, le=1 << 40)] = 64 * 1024 * 1024


class RedisStore(KairosModel):
    """Shared by every gateway and worker that names the same Redis."""

    type: Literal["redis"]
    url: Annotated[str, Field(pattern=r"^rediss?://", max_length=2048)]
    #: Prefix of every key the cache writes.
    prefix: Annotated[str, Field(max_length=128)] = "kairos:cache:"
    #: Entries kept at most (the oldest stored go first).
    max_entries: Annotated[int, Field(ge=1, le=100_000_000)] = 100_000
    #: A Redis call slower than this counts as Redis being down (the request goes on to
    #: the origin).
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.25


class CacheConfig(KairosModel):
    """The ``cache`` plugin's settings."""

    store: Annotated[MemoryStore | RedisStore, Field(discriminator="type")] = Field(
        default_factory=MemoryStore
    )
    #: Responses with a larger body are passed through but not stored.
    max_object_bytes: Annotated[int, Field(ge=1, le=1 << 31)] = 1024 * 1024
    key: CacheKey = Field(default_factory=CacheKey)
    #: Freshness, in seconds, of a cacheable response that states none (no
    #: ``Cache-Control: max-age``/``s-maxage``, no ``Expires``). Unset: such responses
    #: are not stored.
    default_ttl_s: Annotated[int, Field(ge=1, le=365 * 86400)] | None = None
    #: How long a concurrent miss waits for the first one's response before it goes to
    #: the origin itself.
    lock_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    #: Response header whose comma- or space-separated values tag the entry for purging.
    tag_header: _HEADER = "Cache-Tag"
    #: Statuses that may be stored (with explicit freshness, or ``default_ttl_s``).
    statuses: list[Annotated[int, Field(ge=200, le=599)]] = Field(
        default_factory=lambda: [200, 203, 204, 300, 301, 308, 404, 410], max_length=32
    )


class CacheStoreStats(KairosModel):
    """One store's figures (``GET /api/cache``); counters since the process started."""

    store: Literal["memory", "redis"]
    entries: int
    #: Held in memory, or written to Redis by this process.
    bytes: int
    hits: int
    misses: int
    stale: int
    bypass: int
    stored: int
    evictions: int
    store_errors: int
    #: Background revalidations started (``stale-while-revalidate``), and those that
    #: got no usable answer (the stale entry was kept).
    revalidations: int = 0
    revalidation_errors: int = 0


class CacheStatus(KairosModel):
    stores: list[CacheStoreStats]


class CachePurged(KairosModel):
    """What ``DELETE /api/cache`` removed."""

    #: Entries removed (with several workers: by the workers counted in ``workers``).
    purged: int
    key: str | None = None
    route: str | None = None
    tag: str | None = None
    #: With ``--workers N``: the workers whose removals ``purged`` counts (the one that
    #: got the call, and those that answered within a second), and those that had not
    #: answered yet (they apply the purge as soon as they get the signal). Absent for a
    #: single process.
    workers: int | None = None
    workers_pending: int | None = None
