"""`ConfigStore`: the shared configuration in Redis, and nothing else.

Keys (``<prefix>`` is ``cluster.key_prefix``, ``kairos:`` by default)::

    <prefix>config           hash: version, config (JSON, secrets in clear), digest
                             (SHA-256 of config), node (who wrote it), updated_at
    <prefix>config:changed   channel: the new version, published by the write itself
    <prefix>versions         hash: version name (ETag) -> config JSON, secrets in clear
    <prefix>versions:order   sorted set: version names, by when they were last written
    <prefix>audit            list: audit entries (JSON), newest first
    <prefix>audit:last_id    counter: the id of the newest audit entry

The last four are the cluster's audit trail and kept versions (`history`), written by
the same scripts as the configuration (`scripts`) and bounded by ``keep_versions`` and
``keep_entries``.

Every call is bounded by the timeout (connect included) and makes one attempt; Redis
errors leave as `StoreUnavailable`. A write that finds another version than expected
leaves as `StaleVersion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kairos_core.ratelimit import redact_url
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import StaleVersion, StoreUnavailable
from .scripts import APPEND, RESTORE, WRITE

__all__ = [
    "ConfigHead",
    "ConfigStore",
    "Kept",
    "StaleVersion",
    "StoreUnavailable",
    "StoredConfig",
]


@dataclass(frozen=True, slots=True)
class ConfigHead:
    version: int
    digest: str


@dataclass(frozen=True, slots=True)
class StoredConfig:
    version: int
    digest: str
    config: str
    node: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class Kept:
    """What a write keeps beside the configuration: it as version ``version``, the one
    it replaces as ``previous`` (when not kept yet; "" for none), and ``entry`` (an
    audit entry as a JSON object without ``id``; "" for none)."""

    version: str
    previous: str = ""
    entry: str = ""
    keep_versions: int = 20
    keep_entries: int = 1000


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.asynccontextmanager
async def bounded(timeout_s: float) -> AsyncIterator[None]:
    """Redis's failures (and a call running past ``timeout_s``) as `StoreUnavailable`."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise StoreUnavailable(f"no answer within {timeout_s:g}s") from exc
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


class ConfigStore:
    def __init__(self, url: str, *, key_prefix: str, timeout_s: float) -> None:
        self.url = redact_url(url)
        self.key = f"{key_prefix}config"
        self.channel = f"{key_prefix}config:changed"
        self.versions_key = f"{key_prefix}versions"
        self.order_key = f"{key_prefix}versions:order"
        self.audit_key = f"{key_prefix}audit"
        self.audit_id_key = f"{key_prefix}audit:last_id"
        self.timeout_s = timeout_s
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
        }
        self.client = Redis.from_url(url, socket_timeout=timeout_s, **options)
        # Subscriptions wait for messages indefinitely: no read timeout on their socket.
        self._subscriber = Redis.from_url(url, **options)
        self._write = self.client.register_script(WRITE)
        self._restore = self.client.register_script(RESTORE)
        self._append = self.client.register_script(APPEND)

    async def head(self) -> ConfigHead | None:
        """The stored version and digest; None when Redis holds no configuration."""
        async with bounded(self.timeout_s):
            version, digest = await self.client.hmget(self.key, ["version", "digest"])
        if version is None:
            return None
        return ConfigHead(int(version), str(digest or ""))

    async def read(self) -> StoredConfig | None:
        async with bounded(self.timeout_s):
            fields = {str(k): str(v) for k, v in (await self.client.hgetall(self.key)).items()}
        if "version" not in fields or "config" not in fields:
            return None
        return StoredConfig(
            version=int(fields["version"]),
            digest=fields.get("digest") or digest_of(fields["config"]),
            config=fields["config"],
            node=fields.get("node", ""),
            updated_at=float(fields.get("updated_at") or 0.0),
        )

    async def write(self, expected: int, config: str, node: str, kept: Kept | None = None) -> int:
        """Store ``config`` as version ``expected + 1`` (with what ``kept`` says);
        raises `StaleVersion`."""
        return await self._run(self._write, expected, config, node, kept)

    async def restore(self, version: int, config: str, node: str, kept: Kept | None = None) -> int:
        """Store ``config`` as ``version`` if Redis holds an older one (or none);
        raises `StaleVersion` (with what it holds) otherwise."""
        return await self._run(self._restore, version, config, node, kept)

    async def _run(
        self, script: Any, version: int, config: str, node: str, kept: Kept | None
    ) -> int:
        kept = kept if kept is not None else Kept("")
        args = [
            version,
            config,
            digest_of(config),
            node,
            repr(time.time()),
            self.channel,
            kept.version,
            kept.previous,
            kept.entry,
            kept.keep_versions,
            kept.keep_entries,
        ]
        keys = [self.key, self.versions_key, self.order_key, self.audit_key, self.audit_id_key]
        async with bounded(self.timeout_s):
            stored, current = await script(keys=keys, args=args)
        if not stored:
            raise StaleVersion(int(current))
        return int(current)

    async def append_entry(self, entry: str, keep_entries: int) -> None:
        """Add an audit entry that goes with no change (``entry``: a JSON object)."""
        async with bounded(self.timeout_s):
            await self._append(keys=[self.audit_key, self.audit_id_key], args=[entry, keep_entries])

    def pubsub(self) -> PubSub:
        return self._subscriber.pubsub()

    async def announce(self, key: str, channel: str, message: str, ttl_ms: int) -> None:
        """Keep ``message`` at ``key`` for ``ttl_ms`` and publish it on ``channel``."""
        async with bounded(self.timeout_s), self.client.pipeline(transaction=True) as pipe:
            pipe.set(key, message, px=max(1, ttl_ms))
            pipe.publish(channel, message)
            await pipe.execute()

    async def announced(self, pattern: str) -> list[tuple[str, int]]:
        """Every message kept under a key matching ``pattern``, with its ms to live."""
        found: list[tuple[str, int]] = []
        async with bounded(self.timeout_s):
            async for key in self.client.scan_iter(match=pattern, count=100):
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.get(key)
                    pipe.pttl(key)
                    value, ttl = await pipe.execute()
                if value is not None and int(ttl) > 0:
                    found.append((str(value), int(ttl)))
        return found

    async def aclose(self) -> None:
        await self.client.aclose()
        await self._subscriber.aclose()
