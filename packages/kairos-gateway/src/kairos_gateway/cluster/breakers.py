"""`BreakerShare`: one node's discovery of a dead backend protects the other nodes.

When a backend's circuit breaker opens on this node, the node publishes
``{"backend": address, "open_ms": ..., "node": id}`` on ``<prefix>breakers`` and keeps
it under ``<prefix>breaker:<address>`` for as long as the breaker stays open; every
other node opens its own breaker for that backend for the time left, after which it
probes the backend itself (half-open) as usual. A node that (re)subscribes reads the
kept notices, so one joining or reconnecting late is protected too. Only openings are
shared: closing stays each node's own finding. Without Redis nothing is shared and
each node finds a dead backend by itself, as it would without sharing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from ..backends import BackendRegistry, BackendState
from .store import ConfigStore, StoreUnavailable

__all__ = ["BreakerShare"]

log = logging.getLogger("kairos.gateway")


class BreakerShare:
    def __init__(
        self, store: ConfigStore, registry: BackendRegistry, node_id: str, key_prefix: str
    ) -> None:
        self.store = store
        self.registry = registry
        self.node_id = node_id
        self.channel = f"{key_prefix}breakers"
        self._key_prefix = f"{key_prefix}breaker:"
        self._forcing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        """Watch the breaker of every backend not watched yet (new ones after a change)."""
        for state in self.registry:
            if state.breaker.observer is None:
                state.breaker.observer = self._watch(state)

    def _watch(self, state: BackendState) -> Callable[[str, str], None]:
        def changed(old: str, new: str) -> None:
            if new != "open" or self._forcing:
                return  # a forced opening came from another node: do not echo it
            open_ms = round(state.breaker.retry_after_s() * 1000)
            notice = json.dumps(
                {"backend": state.address, "open_ms": open_ms, "node": self.node_id}
            )
            key = self._key_prefix + state.address
            task = asyncio.get_running_loop().create_task(self._publish(key, notice, open_ms))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return changed

    async def _publish(self, key: str, notice: str, open_ms: int) -> None:
        try:
            await self.store.announce(key, self.channel, notice, open_ms)
        except StoreUnavailable as exc:
            log.debug("breaker notice not shared", extra={"fields": {"error": str(exc)}})

    async def catch_up(self) -> None:
        """Apply the notices still in force (after subscribing). Raises `StoreUnavailable`."""
        for notice, ttl_ms in await self.store.announced(self._key_prefix + "*"):
            self.received(notice, open_ms=ttl_ms)

    def received(self, data: str, *, open_ms: int | None = None) -> None:
        """Apply one notice; ``open_ms`` (time left) overrides the one it carries."""
        try:
            notice = json.loads(data)
            backend, node = notice["backend"], notice["node"]
            open_s = (notice["open_ms"] if open_ms is None else open_ms) / 1000
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed breaker notice", extra={"fields": {"data": data}})
            return
        if node == self.node_id:
            return
        for state in self.registry:
            if state.address != backend:
                continue
            self._forcing = True
            try:
                opened = state.breaker.force_open(open_s)
            finally:
                self._forcing = False
            if opened:
                log.warning(
                    "circuit breaker opened by another node",
                    extra={"fields": {"backend": backend, "node": node, "open_s": open_s}},
                )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
