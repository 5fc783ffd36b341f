"""`RedisCache`: entries in Redis, shared by every gateway and worker that names it.

Keys (under the configured prefix; ``h()`` is a SHA-1 of the cache key)::

    v:<h(primary)>    the Vary names of the resource          (expires with its entries)
    e:<h(full)>       one entry: a JSON head line, then the body bytes
    k:<h(primary)>    set of the entry keys of a resource     (purge by key)
    r:<route>         set of entry keys of a route            (purge by route)
    t:<tag>           set of entry keys with a tag            (purge by tag)
    lru               sorted set of entry keys by store time  (the bound: max_entries)

Entries are never unpickled: a Redis others can write to cannot make the gateway run
code. Every call is bounded by ``timeout_s``; when Redis fails the call raises, the
policy counts it and serves from the origin, and the store skips Redis for a second
so a dead Redis costs one timeout per second, not one per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from kairos_core.cache import RedisStore
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .store import CacheStats, Entry, Purge, secondary_key

__all__ = ["RedisCache", "RedisDown"]

#: How long Redis is skipped after a failure.
RETRY_INTERVAL_S = 1.0


class RedisDown(Exception):
    """Redis failed, was too slow, or is skipped after a failure."""


def _h(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _encode(entry: Entry) -> bytes:
    head = {
        "status": entry.status,
        "headers": entry.headers,
        "stored_at": entry.stored_at,
        "initial_age": entry.initial_age,
        "ttl": entry.ttl,
        "swr": entry.stale_while_revalidate,
        "sie": entry.stale_if_error,
        "no_cache": entry.no_cache,
        "must_revalidate": entry.must_revalidate,
        "etag": entry.etag,
        "last_modified": entry.last_modified,
        "tags": entry.tags,
        "route": entry.route,
        "vary": entry.vary,
        "public": entry.public,
    }
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + entry.body


def _decode(blob: bytes) -> Entry:
    line, _, body = blob.partition(b"\n")
    h = json.loads(line)
    return Entry(
        status=h["status"],
        headers=[(n, v) for n, v in h["headers"]],
        body=body,
        stored_at=h["stored_at"],
        initial_age=h["initial_age"],
        ttl=h["ttl"],
        stale_while_revalidate=h["swr"],
        stale_if_error=h["sie"],
        no_cache=h["no_cache"],
        must_revalidate=h["must_revalidate"],
        etag=h["etag"],
        last_modified=h["last_modified"],
        tags=tuple(h["tags"]),
        route=h["route"],
        vary=tuple(h["vary"]),
        public=h["public"],
    )


class RedisCache:
    def __init__(self, config: RedisStore) -> None:
        self.config = config
        self.prefix = config.prefix
        self.stats = CacheStats()
        self._timeout_s = config.timeout_s
        self._client = Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._skip_until = -math.inf
        self._bytes = 0
        self._entries = 0

    def bytes_used(self) -> int:
        """Bytes this process has stored (Redis holds the whole store's)."""
        return self._bytes

    def entries(self) -> int:
        return self._entries

    async def _run(self, work: Any) -> Any:
        if time.monotonic() < self._skip_until:
            work.close()
            raise RedisDown("skipping Redis after a failure")
        try:
            async with asyncio.timeout(self._timeout_s):
                return await work
        except Exception as exc:
            self._skip_until = time.monotonic() + RETRY_INTERVAL_S
            raise RedisDown(str(exc)) from exc

    async def get(self, primary: str, headers: Mapping[str, str]) -> Entry | None:
        found: Entry | None = await self._run(self._get(primary, headers))
        return found

    async def _get(self, primary: str, headers: Mapping[str, str]) -> Entry | None:
        p = self.prefix
        raw = await self._client.get(f"{p}v:{_h(primary)}")
        if raw is None:
            return None
        vary = tuple(json.loads(raw))
        full = _h(primary + chr(10) + secondary_key(vary, headers))
        blob = await self._client.get(f"{p}e:{full}")
        if blob is None:
            return None
        return _decode(blob if isinstance(blob, bytes) else blob.encode())

    async def put(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None:
        await self._run(self._put(primary, headers, entry))

    async def _put(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None:
        p, client = self.prefix, self._client
        hp = _h(primary)
        variant = secondary_key(entry.vary, headers)
        full = f"{p}e:{_h(primary + chr(10) + variant)}"
        keep = max(1, math.ceil(entry.retained_for()))
        old_vary = await client.get(f"{p}v:{hp}")
        async with client.pipeline(transaction=True) as pipe:
            if old_vary is not None and tuple(json.loads(old_vary)) != entry.vary:
                pipe.eval(_DROP_SET, 1, f"{p}k:{hp}", p)
            blob = _encode(entry)
            pipe.set(full, blob, ex=keep)
            pipe.set(f"{p}v:{hp}", json.dumps(entry.vary), ex=keep)
            indexes = [f"{p}k:{hp}"]
            if entry.route:
                indexes.append(f"{p}r:{entry.route}")
            indexes += [f"{p}t:{tag}" for tag in entry.tags]
            for index in indexes:
                # An index lives as long as the longest-kept entry it names.
                pipe.sadd(index, full)
                pipe.expire(index, keep, nx=True)
                pipe.expire(index, keep, gt=True)
            pipe.zadd(f"{p}lru", {full: time.time()})
            pipe.eval(_TRIM, 1, f"{p}lru", self.config.max_entries)
            results = await pipe.execute()
        self._bytes += len(blob)
        self._entries += 1
        self.stats.stored += 1
        self.stats.evictions += int(results[-1] or 0)

    async def purge(self, what: Purge) -> int:
        return int(await self._run(self._purge(what)))

    async def _purge(self, what: Purge) -> int:
        p = self.prefix
        if what.key is not None:
            hp = _h(what.key)
            removed = await self._client.eval(_DROP_SET, 1, f"{p}k:{hp}", p)
            await self._client.delete(f"{p}v:{hp}")
            return int(removed)
        if what.route is not None:
            return int(await self._client.eval(_DROP_SET, 1, f"{p}r:{what.route}", p))
        if what.tag is not None:
            return int(await self._client.eval(_DROP_SET, 1, f"{p}t:{what.tag}", p))
        return 0

    async def close(self) -> None:
        await self._client.aclose()


#: Delete every entry a set names, and the set; the number of entries that existed.
_DROP_SET = """
local members = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, key in ipairs(members) do
  n = n + redis.call('DEL', key)
  redis.call('ZREM', ARGV[1] .. 'lru', key)
end
redis.call('DEL', KEYS[1])
return n
"""

#: Keep at most ARGV[1] entries: the oldest stored go; the number evicted.
_TRIM = """
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if over <= 0 then return 0 end
local doomed = redis.call('ZPOPMIN', KEYS[1], over)
for i = 1, #doomed, 2 do redis.call('DEL', doomed[i]) end
return over
"""
