"""`ClusterNode`: this gateway's membership in a cluster sharing one Redis.

The shared configuration is versioned (`ConfigStore`). The node

- on start, takes the stored configuration, or seeds an empty Redis with the one it
  runs (its config file) by a compare-and-set on version 0, so of two nodes seeding at
  once one wins and the other takes the winner's;
- follows changes: a subscription to the change channel wakes it at once, and it also
  polls the stored version every ``poll_interval_ms``, so catching up (after a missed
  message, a reconnect, an outage) never depends on the subscription;
- stores every change made through its management API with a compare-and-set on the
  version it runs (`store`), before making it live;
- puts its version back when Redis comes back without it (restarted with no
  persistence): the highest version any node ran wins, so a change answered with 2xx
  before the outage is not lost while one node that ran it is up;
- records each change it stores in the cluster's audit trail and kept versions, in the
  same step (`history`): the seed and a put-back version are kept, without an entry.

While Redis is unreachable the node keeps serving what it last applied and reports
itself ``degraded``; management changes fail with 503 and change nothing.

Every method that reads or writes the configuration runs under `LiveConfig.lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from kairos_core import (
    ClusterConfig,
    ClusterStatus,
    ConfigError,
    FieldError,
    GatewayConfig,
    ServiceUnavailable,
    load_config,
)
from redis.exceptions import RedisError

from ..management.audit import change_entry
from ..management.live import config_etag, redacted_data
from .base import CannotApply, StaleVersion, StoreUnavailable, shared_json
from .breakers import BreakerShare
from .history import SharedHistory
from .store import ConfigStore, Kept, digest_of

if TYPE_CHECKING:
    from ..management.live import LiveConfig
    from ..runtime import Runtime
    from ..snapshot import Snapshot

__all__ = ["ClusterNode"]

log = logging.getLogger("kairos.gateway")

#: Longest wait for a change notice before the subscription is checked again.
_LISTEN_S = 30.0


class ClusterNode:
    def __init__(self, runtime: Runtime, live: LiveConfig, config: ClusterConfig) -> None:
        self.runtime = runtime
        self.live = live
        self.config = config
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.store = ConfigStore(
            config.redis_url, key_prefix=config.key_prefix, timeout_s=config.timeout_ms / 1000
        )
        #: The cluster's audit trail and kept versions.
        self.history = SharedHistory(self.store)
        self.poll_s = config.poll_interval_ms / 1000
        #: The cluster version this node runs, and the digest of its stored JSON.
        self.applied_version = 0
        self.applied_digest: str | None = None
        #: The newest version seen in Redis.
        self.stored_version: int | None = None
        self.connected = False
        self.error: str | None = None
        self.apply_error: str | None = None
        self._last_contact: float | None = None
        self._rejected: tuple[int, str] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.breakers = (
            BreakerShare(self.store, runtime.registry, self.node_id, config.key_prefix)
            if config.share_breakers
            else None
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Join: one bounded attempt at the first sync, then follow in the background."""
        with contextlib.suppress(StoreUnavailable):  # degraded; the follower retries
            async with self.live.lock:
                await self._sync()
        if self.breakers is not None:
            self.breakers.attach()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._listen())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.breakers is not None:
            await self.breakers.close()
        await self.store.aclose()

    def status(self) -> ClusterStatus:
        last = self._last_contact
        return ClusterStatus(
            state="connected" if self.connected else "degraded",
            redis_url=self.store.url,
            node_id=self.node_id,
            applied_version=self.applied_version,
            stored_version=self.stored_version,
            last_contact_s=None if last is None else round(time.monotonic() - last, 3),
            error=self.error or self.apply_error,
            share_breakers=self.breakers is not None,
        )

    # -- called by LiveConfig (under its lock) ---------------------------------------

    def keep_own_block(
        self, current: GatewayConfig, proposed: object, config: GatewayConfig
    ) -> GatewayConfig:
        """``config`` with this node's ``cluster`` block; 422 if the change sets another."""
        if (
            isinstance(proposed, dict)
            and "cluster" in proposed
            and config.cluster != current.cluster
        ):
            raise ConfigError(
                [
                    FieldError(
                        ("cluster",),
                        "is read at start-up and belongs to this node: change it in the "
                        "node's config file (or KAIROS_REDIS_URL) and restart",
                    )
                ]
            )
        return config.model_copy(update={"cluster": current.cluster})

    async def store_change(self, config: GatewayConfig) -> tuple[int, str]:
        """Store ``config`` as the next version (compare-and-set on the one this node
        runs); returns the version and digest to pass to `stored_change` once live.

        Raises `StaleVersion` (another node changed it first: catch up and retry) or
        `StoreUnavailable` (nothing changed anywhere).
        """
        text = shared_json(config)
        kept = self._kept(config, self.runtime.snapshot.config)
        try:
            with self._contact():
                version = await self.store.write(self.applied_version, text, self.node_id, kept)
        except StaleVersion as exc:
            if self.applied_version == 0 or exc.stored >= self.applied_version:
                raise
            # Redis lost what this node runs: put it back, then change it.
            await self._restore()
            with self._contact():
                version = await self.store.write(self.applied_version, text, self.node_id, kept)
        return version, digest_of(text)

    @staticmethod
    def _kept(config: GatewayConfig, before: GatewayConfig | None = None) -> Kept:
        """``config`` kept as a version; with ``before``, also the change's audit entry
        (made by the current actor) and ``before`` as a version if not kept yet."""
        audit = config.admin.audit
        version = config_etag(config).strip('"')
        entry = previous = ""
        if before is not None:
            previous = config_etag(before).strip('"')
            made = change_entry(redacted_data(before), redacted_data(config), previous, version)
            entry = "" if made is None else json.dumps(made)
        return Kept(version, previous, entry, audit.keep_versions, audit.keep_entries)

    def stored_change(self, version: int, digest: str) -> None:
        self.stored_version = version
        self._applied(version, digest)
        log.info(
            "configuration change stored in the cluster",
            extra={"fields": {"cluster_version": version, "node": self.node_id}},
        )

    async def catch_up(self) -> None:
        """After a stale write: apply the stored version. Raises `StoreUnavailable`, or
        `CannotApply` when this node cannot apply it."""
        before = self.applied_version
        await self._sync()
        if self.applied_version == before:
            raise CannotApply(
                f"the cluster's configuration is at version {self.stored_version}, which "
                f"this node cannot apply ({self.apply_error}); it still runs version {before}"
            )

    async def reload(self) -> Snapshot | None:
        """Re-read the cluster's configuration now (reload, SIGHUP: the file is only the
        seed). Returns the new snapshot, or None when this node already runs it."""
        async with self.live.lock:
            before = self.runtime.snapshot
            try:
                await self._sync()
            except StoreUnavailable as exc:
                raise ServiceUnavailable(
                    f"the cluster's Redis ({self.store.url}) cannot be reached; still "
                    f"serving version {self.applied_version}"
                ) from exc
            after = self.runtime.snapshot
            return None if after is before else after

    def applied(self) -> None:
        """A snapshot went live: share the breakers of backends it added."""
        if self.breakers is not None:
            self.breakers.attach()

    # -- following -------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                async with self.live.lock:
                    await self._sync()
            except StoreUnavailable:
                pass  # recorded and logged by _contact
            except Exception:
                # A background loop must outlive a bug in one round.
                log.exception("cluster sync failed; retrying")

    async def _listen(self) -> None:
        """Wake the follower on every change notice; resubscribe after a failure."""
        channels = [self.store.channel]
        if self.breakers is not None:
            channels.append(self.breakers.channel)
        while True:
            pubsub = self.store.pubsub()
            try:
                async with asyncio.timeout(self.store.timeout_s):
                    await pubsub.subscribe(*channels)
                self._wake.set()  # anything published while unsubscribed
                if self.breakers is not None:
                    await self.breakers.catch_up()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_LISTEN_S
                    )
                    if message is None:
                        continue
                    if message["channel"] == self.store.channel:
                        self._wake.set()
                    elif self.breakers is not None:
                        self.breakers.received(message["data"])
            except (RedisError, OSError, TimeoutError, StoreUnavailable):
                pass  # the follower's polling reports the outage
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self.poll_s)  # no event says "Redis is back": retry later

    async def _sync(self) -> None:
        """Bring this node and Redis in line (caller holds the lock)."""
        with self._contact():
            head = await self.store.head()
        self.stored_version = 0 if head is None else head.version
        if head is None or head.version < self.applied_version:
            if self.applied_version == 0:
                await self._seed()
            else:
                await self._restore()
        elif head.version > self.applied_version or head.digest != self.applied_digest:
            await self._adopt()

    async def _seed(self) -> None:
        text = shared_json(self.runtime.snapshot.config)
        try:
            with self._contact():
                version = await self.store.write(
                    0, text, self.node_id, self._kept(self.runtime.snapshot.config)
                )
        except StaleVersion:  # another node seeded first: take its configuration
            await self._adopt()
            return
        self.stored_version = version
        self._applied(version, digest_of(text))
        log.info(
            "seeded the cluster's configuration from this node's config file",
            extra={"fields": {"cluster_version": version, "node": self.node_id}},
        )

    async def _restore(self) -> None:
        config = self.runtime.snapshot.config
        text = shared_json(config)
        try:
            with self._contact():
                await self.store.restore(
                    self.applied_version, text, self.node_id, self._kept(config)
                )
        except StaleVersion:  # another node put back one at least as new
            await self._adopt()
            return
        self.stored_version = self.applied_version
        log.warning(
            "Redis had lost the cluster's configuration; stored this node's version again",
            extra={"fields": {"cluster_version": self.applied_version, "node": self.node_id}},
        )

    async def _adopt(self) -> None:
        with self._contact():
            stored = await self.store.read()
        if stored is None or stored.version < self.applied_version:
            return  # emptied meanwhile: the next round seeds or restores
        self.stored_version = stored.version
        if stored.version == self.applied_version and stored.digest == self.applied_digest:
            return
        if self._rejected == (stored.version, stored.digest):
            return  # already reported; wait for a newer version
        runtime = self.runtime
        try:
            config = load_config(json.loads(stored.config))
            config = config.model_copy(update={"cluster": runtime.snapshot.config.cluster})
            snapshot = runtime.prepare(config)
        except (ConfigError, ValueError) as exc:
            self._rejected = (stored.version, stored.digest)
            errors = exc.errors if isinstance(exc, ConfigError) else []
            self.apply_error = f"version {stored.version} is invalid here: {exc}"
            self.live.record("cluster", error=self.apply_error, errors=errors)
            log.error(
                "cannot apply the cluster's configuration; still serving the previous one",
                extra={
                    "fields": {
                        "cluster_version": stored.version,
                        "running_version": self.applied_version,
                        "errors": [str(e) for e in errors] or [str(exc)],
                    }
                },
            )
            return
        self.live.adopt(snapshot, "cluster")
        self._applied(stored.version, stored.digest)
        log.info(
            "applied the cluster's configuration",
            extra={"fields": {"cluster_version": stored.version, "written_by": stored.node}},
        )

    def _applied(self, version: int, digest: str) -> None:
        self.applied_version = version
        self.applied_digest = digest
        self.apply_error = None
        self._rejected = None

    @contextlib.contextmanager
    def _contact(self) -> Iterator[None]:
        """Track whether Redis answers; log each change between reachable and not."""
        try:
            yield
        except StoreUnavailable as exc:
            if self.connected or self.error is None:
                log.warning(
                    "cluster Redis unavailable: serving the last applied configuration; "
                    "management changes are refused (503) until it is back",
                    extra={
                        "fields": {
                            "redis": self.store.url,
                            "cluster_version": self.applied_version,
                            "error": str(exc),
                        }
                    },
                )
            self.connected = False
            self.error = str(exc)
            raise
        except StaleVersion:
            self._reached()
            raise
        self._reached()

    def _reached(self) -> None:
        if not self.connected:
            log.info(
                "cluster Redis reachable",
                extra={"fields": {"redis": self.store.url, "node": self.node_id}},
            )
        self.connected = True
        self.error = None
        self._last_contact = time.monotonic()
