"""Metrics for the UI: a live snapshot over recent windows, and a 24-hour history.

`MetricsSampler` reads the gateway's cumulative counters every ``interval_s`` (1 s by
default) into a short ring covering the last minute; windowed figures (req/s over 10 s
and 1 min, percentiles over the last minute) are differences between the live reading
and the sample taken that long ago. Every ``step_s`` (10 s) it also appends one point,
the deltas since the previous point, to the history ring. Both rings are `deque`s with
a fixed ``maxlen`` (the history holds ``retention_s / step_s`` points: 8,640 for 24 h),
so memory is bounded by construction whatever the uptime.

Percentiles come from the duration histograms, interpolated linearly inside a bucket,
so they are as precise as the buckets (`metrics.DURATION_BUCKETS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..metrics import DURATION_BUCKETS, BackendStats, RouteStats

if TYPE_CHECKING:
    from ..app import Gateway

_NO_BUCKETS = (0,) * (len(DURATION_BUCKETS) + 1)


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative counts for one route label (or the total) at one moment."""

    requests: int = 0
    success: int = 0  # status < 400
    client_errors: int = 0  # 4xx
    server_errors: int = 0  # 5xx
    buckets: tuple[int, ...] = _NO_BUCKETS

    def __sub__(self, other: Reading) -> Reading:
        return Reading(
            max(0, self.requests - other.requests),
            max(0, self.success - other.success),
            max(0, self.client_errors - other.client_errors),
            max(0, self.server_errors - other.server_errors),
            tuple(max(0, a - b) for a, b in zip(self.buckets, other.buckets, strict=True)),
        )

    def __add__(self, other: Reading) -> Reading:
        return Reading(
            self.requests + other.requests,
            self.success + other.success,
            self.client_errors + other.client_errors,
            self.server_errors + other.server_errors,
            tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
        )


def read_route(stats: RouteStats) -> Reading:
    total = success = client = server = 0
    for (_, status), count in list(stats.requests.items()):
        total += count
        if status < 400:
            success += count
        elif status < 500:
            client += count
        else:
            server += count
    return Reading(total, success, client, server, tuple(stats.duration.counts))


def read_backend(stats: BackendStats) -> Reading:
    counts = tuple(stats.duration.counts)
    errors = sum(stats.errors.values())
    return Reading(sum(counts) + errors, sum(counts), 0, errors, counts)


def percentile_ms(buckets: tuple[int, ...], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a histogram in milliseconds; None when empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(buckets):
        upper = DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else DURATION_BUCKETS[-1]
        if count and seen + count >= rank:
            if i >= len(DURATION_BUCKETS):
                return round(upper * 1000, 3)  # beyond the last bound: report the bound
            fraction = (rank - seen) / count
            return round((lower + (upper - lower) * fraction) * 1000, 3)
        seen += count
        lower = upper
    return round(DURATION_BUCKETS[-1] * 1000, 3)  # pragma: no cover - rank <= total


def latency(buckets: tuple[int, ...]) -> dict[str, float | None]:
    return {
        "p50": percentile_ms(buckets, 0.50),
        "p95": percentile_ms(buckets, 0.95),
        "p99": percentile_ms(buckets, 0.99),
    }


def success_rate(reading: Reading) -> float | None:
    return None if reading.requests == 0 else round(reading.success / reading.requests, 6)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    total: Reading
    routes: dict[str, Reading]
    backends: dict[str, Reading]


@dataclass(frozen=True, slots=True)
class Point:
    """One history step: what happened during it (deltas) and the state at its end."""

    at: float  # wall clock, end of the step
    seconds: float
    delta: Reading
    active_requests: int


def _sum(readings: Iterable[Reading]) -> Reading:
    out = Reading()
    for reading in readings:
        out = out + reading
    return out


class MetricsSampler:
    def __init__(
        self,
        gateway: Gateway,
        *,
        interval_s: float = 1.0,
        step_s: float = 10.0,
        retention_s: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        self.step_s = max(step_s, interval_s)
        self.retention_s = retention_s
        self._clock = clock
        self._wall = wall
        # One minute of samples, plus one so a full minute back is always there.
        self.recent: deque[Sample] = deque(maxlen=math.ceil(60 / interval_s) + 2)
        self.history: deque[Point] = deque(maxlen=max(1, math.ceil(retention_s / self.step_s)))
        self._last_point: tuple[float, Reading] | None = None
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self.samples_taken = 0

    # -- reading ---------------------------------------------------------------------

    def read(self) -> Sample:
        # The metrics keep one object per label for the process's life, so totals
        # include routes and backends since removed.
        metrics = self.gateway.metrics
        routes = {stats.label: read_route(stats) for stats in metrics.routes()}
        backends = {stats.label: read_backend(stats) for stats in metrics.backends()}
        return Sample(self._clock(), _sum(routes.values()), routes, backends)

    def _back(self, now: float, seconds: float) -> Sample | None:
        """The newest sample at least ``seconds`` old, else the oldest one."""
        chosen: Sample | None = None
        for sample in self.recent:
            if now - sample.at >= seconds - self.interval_s / 2:
                chosen = sample
            else:
                break
        if chosen is None and self.recent:
            chosen = self.recent[0]
        return chosen

    # -- sampling --------------------------------------------------------------------

    def sample(self) -> None:
        """Take one sample (and, when a step has passed, one history point)."""
        sample = self.read()
        self.recent.append(sample)
        self.samples_taken += 1
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()
        last = self._last_point
        if last is None:
            self._last_point = (sample.at, sample.total)
        elif sample.at - last[0] >= self.step_s - self.interval_s / 2:
            self.history.append(
                Point(
                    self._wall(),
                    sample.at - last[0],
                    sample.total - last[1],
                    self.gateway.metrics.active_requests,
                )
            )
            self._last_point = (sample.at, sample.total)

    async def wait_for(self, samples: int) -> None:
        """Wait until at least ``samples`` samples have been taken in all (the caller
        bounds the wait)."""
        while self.samples_taken < samples:
            await self._tick.wait()

    def start(self) -> None:
        if self._task is None:
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    # -- views -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """The JSON body of ``GET /api/metrics``."""
        gateway = self.gateway
        now = self.read()
        ten = self._back(now.at, 10)
        minute = self._back(now.at, 60)

        def rate(old: Sample | None, delta: Reading) -> float:
            if old is None or now.at <= old.at:
                return 0.0
            return round(delta.requests / (now.at - old.at), 3)

        minute_total = now.total - minute.total if minute is not None else Reading()
        routes = []
        for label, reading in sorted(now.routes.items()):
            if reading.requests == 0:
                continue
            old = minute.routes.get(label, Reading()) if minute is not None else Reading()
            window = reading - old
            routes.append(
                {
                    "route": label,
                    "requests": reading.requests,
                    "client_errors": reading.client_errors,
                    "server_errors": reading.server_errors,
                    "success_rate": success_rate(reading),
                    "requests_per_second_1m": rate(minute, window),
                    "latency_ms_1m": latency(window.buckets),
                }
            )
        states = {state.address: state for state in gateway.registry}
        backends = []
        for address, reading in sorted(now.backends.items()):
            state = states.get(address)
            old = minute.backends.get(address, Reading()) if minute is not None else Reading()
            backends.append(
                {
                    "address": address,
                    "in_use": state is not None,
                    "healthy": None if state is None else state.healthy,
                    "circuit_breaker": None if state is None else state.breaker.state,
                    "inflight": 0 if state is None else state.inflight,
                    "responses": reading.success,
                    "errors": reading.server_errors,
                    "latency_ms_1m": latency((reading - old).buckets),
                }
            )
        total = now.total
        return {
            "timestamp": _iso(self._wall()),
            "uptime_s": round(gateway.uptime_s(), 3),
            "config_version": gateway.snapshot.generation,
            "active_requests": gateway.metrics.active_requests,
            "totals": {
                "requests": total.requests,
                "success": total.success,
                "client_errors": total.client_errors,
                "server_errors": total.server_errors,
                "success_rate": success_rate(total),
            },
            "requests_per_second": {
                "last_10s": rate(ten, total - ten.total if ten is not None else Reading()),
                "last_1m": rate(minute, minute_total),
            },
            "success_rate_1m": success_rate(minute_total),
            "latency_ms_1m": latency(minute_total.buckets),
            "routes": routes,
            "backends": backends,
        }

    def series(self, range_s: float, step_s: float) -> dict[str, object]:
        """The JSON body of ``GET /api/metrics/history``: points of ``step_s`` seconds
        (a multiple of the sampling step) covering the last ``range_s`` seconds."""
        factor = max(1, round(step_s / self.step_s))
        since = self._wall() - range_s
        points = [p for p in self.history if p.at > since]
        out = []
        # Group from the newest point backwards so the last bucket is always complete.
        for end in range(len(points), 0, -factor):
            group = points[max(0, end - factor) : end]
            delta = _sum(p.delta for p in group)
            seconds = sum(p.seconds for p in group)
            out.append(
                {
                    "timestamp": _iso(group[-1].at),
                    "requests": delta.requests,
                    "requests_per_second": round(delta.requests / seconds, 3) if seconds else 0.0,
                    "client_errors": delta.client_errors,
                    "server_errors": delta.server_errors,
                    "success_rate": success_rate(delta),
                    "latency_ms": latency(delta.buckets),
                    "active_requests": group[-1].active_requests,
                }
            )
        out.reverse()
        return {
            "range_s": range_s,
            "step_s": factor * self.step_s,
            "points": out,
        }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
