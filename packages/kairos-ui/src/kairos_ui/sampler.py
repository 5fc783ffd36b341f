"""Per-route and per-backend history, sampled by the UI itself.

The gateway keeps a 24 h history of its totals (``/api/metrics/history``) but only a
current snapshot per route and per backend. The UI therefore polls the snapshot every
``interval_s`` while it runs and keeps up to 24 h of samples in memory: per-route and
per-backend charts cover the time since the UI started (at most 24 h).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from kairos_client import KairosClientError
from kairos_core import BackendMetrics, MetricsSnapshot, RouteMetrics

from .gateway import Gateway

__all__ = ["Sample", "Sampler", "backend_series", "route_series"]

log = logging.getLogger(__name__)
KEEP_S = 24 * 3600
Series = tuple[str, list[list[Any]]]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time() of the sample
    timestamp: str  # the gateway's ISO timestamp
    routes: dict[str, RouteMetrics]
    backends: dict[str, BackendMetrics]

    @classmethod
    def of(cls, snapshot: MetricsSnapshot, at: float) -> Sample:
        return cls(
            at,
            snapshot.timestamp,
            {r.route: r for r in snapshot.routes},
            {b.address: b for b in snapshot.backends},
        )


def _pairs(samples: list[Sample]) -> Iterable[tuple[Sample, Sample]]:
    return pairwise(samples)


def _rate(before: int, after: int, seconds: float) -> float | None:
    """Per-second increase of a counter; None across a gateway restart (it went down)."""
    if seconds <= 0 or after < before:
        return None
    return round((after - before) / seconds, 3)


def route_series(samples: list[Sample], metric: str) -> list[Series]:
    """One series per route: ``rps`` (requests/s), ``errors`` (4xx+5xx /s) or ``p95``."""
    names = sorted({name for s in samples for name in s.routes})
    out: list[Series] = []
    for name in names:
        data: list[list[Any]] = []
        for a, b in _pairs(samples):
            ra, rb = a.routes.get(name), b.routes.get(name)
            if rb is None:
                continue
            value: float | None
            if metric == "p95":
                value = rb.latency_ms_1m.p95
            elif ra is None:
                value = None
            elif metric == "errors":
                value = _rate(
                    ra.client_errors + ra.server_errors,
                    rb.client_errors + rb.server_errors,
                    b.at - a.at,
                )
            else:
                value = _rate(ra.requests, rb.requests, b.at - a.at)
            data.append([b.timestamp, value])
        out.append((name, data))
    return out


def backend_series(samples: list[Sample], metric: str) -> list[Series]:
    """One series per backend: ``rps`` (responses/s), ``errors`` (/s), ``inflight``, ``p95``."""
    names = sorted({name for s in samples for name in s.backends})
    out: list[Series] = []
    for name in names:
        data: list[list[Any]] = []
        for a, b in _pairs(samples):
            ba, bb = a.backends.get(name), b.backends.get(name)
            if bb is None:
                continue
            value: float | None
            if metric == "p95":
                value = bb.latency_ms_1m.p95
            elif metric == "inflight":
                value = bb.inflight
            elif ba is None:
                value = None
            elif metric == "errors":
                value = _rate(ba.errors, bb.errors, b.at - a.at)
            else:
                value = _rate(ba.responses, bb.responses, b.at - a.at)
            data.append([b.timestamp, value])
        out.append((name, data))
    return out


class Sampler:
    """Polls ``/api/metrics`` every ``interval_s`` and keeps 24 h of samples."""

    def __init__(
        self, gateway: Gateway, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        self.clock = clock
        self.samples: deque[Sample] = deque(maxlen=max(2, int(KEEP_S / interval_s)))

    def add(self, snapshot: MetricsSnapshot) -> None:
        self.samples.append(Sample.of(snapshot, self.clock()))

    def last(self, range_s: float) -> list[Sample]:
        """The samples of the last ``range_s`` seconds, oldest first."""
        since = self.clock() - range_s
        return [s for s in self.samples if s.at >= since]

    async def sample(self) -> None:
        try:
            self.add(await self.gateway.client.metrics())
        except KairosClientError as exc:  # the pages show the outage; keep sampling
            log.debug("metrics sample failed: %s", exc)

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)
