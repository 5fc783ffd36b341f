"""`SharedHistory`: the cluster's audit trail and kept versions, read from Redis.

They are written by the node that stores a change, in the same atomic step as the
change itself (see `scripts` and `store.Kept`), so there is one entry per change
however many nodes apply it, and every node reads the same trail and versions. The
versions hold the shared configuration (without a node's ``cluster`` block) with its
secrets in clear, as ``<prefix>config`` does: Redis must be protected like the config
file.

Every read is bounded by the store's timeout; Redis errors leave as `StoreUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from .store import ConfigStore, bounded

__all__ = ["SharedHistory"]


def _bare(version: str) -> str:
    return version.removeprefix("W/").strip('"')


class SharedHistory:
    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    async def entries(self, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Newest first, at most ``limit``, only those with an id below ``before``."""
        store = self.store
        client = store.client
        async with bounded(store.timeout_s):
            start = 0
            if before is not None:
                # Ids go down by one along the list (each written with its entry), so
                # the page's first entry is found by position, not by reading them all.
                newest = _parsed(await client.lindex(store.audit_key, 0))
                newest_id = int(newest.get("id", 0)) if newest else 0
                start = max(0, newest_id - before + 1)
            lines = await client.lrange(store.audit_key, start, start + limit - 1)
        found = [e for e in map(_parsed, lines) if e is not None]
        if before is not None:
            found = [e for e in found if int(e.get("id", 0)) < before]
        return found[:limit]

    async def versions(self, live: str) -> list[dict[str, Any]]:
        """The kept versions, newest first: ``version``, ``saved_at``, whether ``live``."""
        store = self.store
        async with bounded(store.timeout_s):
            # (name, score) pairs; redis-py's types cannot say which shape of list.
            kept: list[Any] = await store.client.zrevrange(store.order_key, 0, -1, withscores=True)
        return [
            {
                "version": str(name),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(at))),
                "live": str(name) == _bare(live),
            }
            for name, at in kept
        ]

    async def version(self, version: str) -> dict[str, Any] | None:
        """The configuration kept as ``version`` (secrets in clear), or None."""
        store = self.store
        async with bounded(store.timeout_s):
            text = await store.client.hget(store.versions_key, _bare(version))
        data = _parsed(text)
        return data


def _parsed(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    return None
