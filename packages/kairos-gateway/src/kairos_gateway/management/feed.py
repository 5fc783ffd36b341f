"""What the gateway tells `GET /api/events` subscribers, and when.

`EventFeed` turns what happens in the gateway into events on its `EventBus`:

    config.applied          a configuration went live (API, rollback, file watcher,
                            SIGHUP, a sibling worker, the cluster): versions, actor,
                            trigger and what changed (names, never values)
    config.reload_failed    a reload (file, SIGHUP, API, cluster) was refused
    config.reload_recovered the first reload that worked after one that failed
    backend.health          an active health check flipped a backend
    backend.breaker         a circuit breaker changed state
    backend.ejection        outlier detection ejected a backend, or its ejection ended
    metrics                 once a second while anyone subscribes: the headline figures

Transitions are published where they happen (the health checker, the breaker, the
outlier detector call in), so a subscriber sees them within the detection time
itself. The end of an ejection has no moment of its own (it is a comparison with the
clock), so the tick, which runs only while someone subscribes, looks for it once a
second. Payloads carry names, states, versions and counts, never a configuration value,
so no secret can reach a stream whatever the subscriber's role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..events import METRICS, EventBus

if TYPE_CHECKING:
    from ..backends import BackendState
    from ..runtime import Runtime
    from .history import MetricsSampler
    from .live import ReloadRecord

__all__ = ["TICK_S", "EventFeed"]

log = logging.getLogger("kairos.gateway")

#: Seconds between two metrics ticks (and ejection-end checks).
TICK_S = 1.0


class EventFeed:
    def __init__(
        self,
        bus: EventBus,
        runtime: Runtime,
        sampler: MetricsSampler,
        *,
        tick_s: float = TICK_S,
    ) -> None:
        self.bus = bus
        self.runtime = runtime
        self.sampler = sampler
        self.tick_s = tick_s
        #: Backends whose ejection was announced and whose end is not yet.
        self._ejected: set[BackendState] = set()
        self._ticker: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_while_watched())

    async def close(self) -> None:
        task, self._ticker = self._ticker, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- configuration ---------------------------------------------------------------

    def config_applied(self, entry: dict[str, Any], generation: int) -> None:
        """A configuration went live; ``entry`` is its audit entry (see `AuditTrail`)."""
        self.bus.publish(
            "config.applied",
            {
                "version": entry["version"],
                "previous_version": entry["previous_version"],
                "config_version": generation,
                "actor": entry["actor"],
                "source": entry["source"],
                "trigger": entry["trigger"],
                "changes": entry["changes"],
            },
        )

    def reload_recorded(self, previous: ReloadRecord | None, record: ReloadRecord) -> None:
        if not record.ok:
            self.bus.publish(
                "config.reload_failed",
                {
                    "trigger": record.trigger,
                    "error": record.error,
                    # The same field errors /api/config/status shows (values of
                    # secret-sounding keys are never echoed by the loader).
                    "errors": [error.as_dict() for error in record.errors],
                },
            )
        elif previous is not None and not previous.ok:
            self.bus.publish(
                "config.reload_recovered",
                {"trigger": record.trigger, "failed_trigger": previous.trigger},
            )

    # -- backends --------------------------------------------------------------------

    def _backend(self, state: BackendState) -> dict[str, Any]:
        return {"backend": state.address, "available": state.available()}

    def health_changed(self, state: BackendState, error: str | None) -> None:
        self.bus.publish(
            "backend.health",
            {**self._backend(state), "healthy": state.healthy, "error": error},
        )

    def breaker_changed(self, state: BackendState, old: str, new: str) -> None:
        self.bus.publish("backend.breaker", {**self._backend(state), "from": old, "to": new})

    def ejection_changed(self, state: BackendState) -> None:
        outlier = state.outlier
        ejected = outlier.ejected()
        if ejected:
            self._ejected.add(state)
        else:
            self._ejected.discard(state)
        self.bus.publish(
            "backend.ejection",
            {
                **self._backend(state),
                "ejected": ejected,
                "reason": outlier.reason,
                "remaining_s": round(outlier.remaining_s(), 3),
                "count": outlier.stats.ejections,
            },
        )

    def _ejections_ended(self) -> None:
        for state in list(self._ejected):
            if not state.outlier.ejected():
                self.ejection_changed(state)

    # -- the tick --------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The tick's figures: `GET /api/metrics` without its per-route and per-backend
        lists (those stay a poll away)."""
        snapshot = self.sampler.snapshot()
        return {
            key: snapshot[key]
            for key in (
                "timestamp",
                "uptime_s",
                "config_version",
                "active_requests",
                "totals",
                "requests_per_second",
                "success_rate_1m",
                "latency_ms_1m",
            )
        }

    async def _tick_while_watched(self) -> None:
        bus = self.bus
        while True:
            await bus.watched.wait()
            try:
                self._ejections_ended()
                if bus.subscribers:
                    bus.publish(METRICS, self.metrics())
            except Exception:  # a tick must never end the feed
                log.exception("event feed tick failed")
            await asyncio.sleep(self.tick_s)
