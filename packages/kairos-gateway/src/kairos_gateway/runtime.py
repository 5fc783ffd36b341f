"""What the data plane runs on: the live snapshot and the state that outlives it.

`Runtime` holds the live `Snapshot` and everything kept across snapshots: the backend
registry (breakers, in-flight counts, latency, health), the metrics, the rate limiters,
the plugin registry and the upstream connection pool. It knows nothing of Tornado, the
management API, the cluster or the app: they depend on it, not the other way round.

A configuration change has three steps, so a caller can persist in between:
`prepare` compiles the next snapshot off to the side, changing nothing live;
`activate` makes it live and tells the observers; `discard` forgets a prepared one.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from kairos_core import GatewayConfig

from .backends import EWMA_DECAY_S, BackendRegistry
from .cache import SharedCache, caches_of, close_caches
from .cache.metrics import CacheCollector
from .metrics import GatewayMetrics, PoolGauge
from .plugins import PluginRegistry
from .ratelimit import RateLimiters
from .services import PluginServices
from .snapshot import Snapshot, build_snapshot
from .upstream import UpstreamPool

__all__ = ["Runtime", "SnapshotObserver"]

log = logging.getLogger("kairos.gateway")

#: Called with (previous, new) after a snapshot went live.
SnapshotObserver = Callable[[Snapshot, Snapshot], None]


class Runtime:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        source: Path | None = None,
        plugins: PluginRegistry | None = None,
        ewma_decay_s: float = EWMA_DECAY_S,
    ) -> None:
        self.metrics = GatewayMetrics()
        self.metrics.registry.register(CacheCollector(self.caches))
        self.rng = random.Random()
        self.registry = BackendRegistry(
            self.metrics, clock=time.monotonic, ewma_decay_s=ewma_decay_s
        )
        self.metrics.backend_gauges = self._backend_gauges
        self.limiters = RateLimiters()
        self.metrics.rate_limit_store_errors = lambda: self.limiters.store_errors
        self.plugins = plugins if plugins is not None else PluginRegistry()
        self.pool = UpstreamPool()
        self.services = PluginServices(
            pool=self.pool, clock=time.monotonic, metrics=self.metrics.registry
        )
        self.metrics.pool_gauges = self._pool_gauges
        self._observers: list[SnapshotObserver] = []
        #: The live configuration; replaced only by `activate`.
        self.snapshot: Snapshot = build_snapshot(
            config,
            metrics=self.metrics,
            registry=self.registry,
            limiters=self.limiters,
            plugins=self.plugins,
            services=self.services,
            source=source,
            rng=self.rng,
        )

    def observe(self, observer: SnapshotObserver) -> None:
        """Call ``observer(previous, new)`` after every `activate`, in the order added."""
        self._observers.append(observer)

    def prepare(self, config: GatewayConfig, *, source: Path | None = None) -> Snapshot:
        """Compile ``config`` into the next snapshot without making it live.

        Raises `ConfigError`. Nothing live changes: new backends are registered (with
        fresh state), existing ones are left as they are. Follow with `activate`, or
        `discard` to forget the backends the build registered.
        """
        current = self.snapshot
        return build_snapshot(
            config,
            metrics=self.metrics,
            registry=self.registry,
            limiters=self.limiters,
            plugins=self.plugins,
            services=self.services,
            generation=current.generation + 1,
            source=current.source if source is None else source,
            previous=current,
            rng=self.rng,
        )

    def discard(self, snapshot: Snapshot) -> None:
        """Forget a prepared ``snapshot`` (it will never be live)."""
        self.registry.retain(self.snapshot.endpoints())

    def activate(self, snapshot: Snapshot) -> None:
        """Swap ``snapshot`` in: from the next request on, it is the configuration.

        Requests in flight finish on the snapshot they started with; per-backend state
        carries over for backends that stay (their breaker settings updated) and is
        dropped for backends that leave.
        """
        previous, self.snapshot = self.snapshot, snapshot
        self.registry.configure(snapshot.breakers)
        endpoints = snapshot.endpoints()
        self.registry.retain(endpoints)
        self.pool.retain(endpoints)
        log.info(
            "configuration applied",
            extra={
                "fields": {"config_version": snapshot.generation, "routes": len(snapshot.table)}
            },
        )
        for observer in self._observers:
            observer(previous, snapshot)

    def apply(self, config: GatewayConfig, *, source: Path | None = None) -> Snapshot:
        """`prepare` and `activate` in one step; raises `ConfigError`, changing nothing."""
        snapshot = self.prepare(config, source=source)
        self.activate(snapshot)
        return snapshot

    def _backend_gauges(self) -> list[tuple[str, int, int, int]]:
        seen: dict[str, tuple[str, int, int, int]] = {}
        for state in self.registry:
            seen.setdefault(
                state.address,
                (state.address, int(state.healthy), state.breaker.state_value, state.inflight),
            )
        return list(seen.values())

    def _pool_gauges(self) -> list[PoolGauge]:
        out: list[PoolGauge] = []
        seen: set[str] = set()
        for state in self.registry:
            stats = self.pool.endpoint_stats(state.endpoint)
            if stats is None or state.address in seen:
                continue
            seen.add(state.address)
            out.append(
                (
                    state.address,
                    stats.open,
                    stats.idle,
                    stats.pending,
                    stats.opened_total,
                    stats.saturated_total,
                    stats.queue_seconds_total,
                )
            )
        return out

    def caches(self) -> list[SharedCache]:
        """The response cache stores the live configuration's routes use."""
        return caches_of(route.chain for route in self.snapshot.routes)

    async def aclose(self) -> None:
        """Close what the runtime holds open: rate-limit and cache stores, upstream
        connections."""
        await self.limiters.aclose()
        for close in self.services.closers:
            try:
                await close()
            except Exception:
                log.exception("a plugin's store failed to close")
        await close_caches(self.caches())
        await self.pool.close()
