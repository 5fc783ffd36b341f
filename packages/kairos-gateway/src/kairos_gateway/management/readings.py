"""Readings of the cumulative metrics, and the rings that keep them per label.

A `Reading` is one label's counters at one instant (requests, client and server errors,
the latency histogram); the difference of two readings is what happened in between.
`MetricsSampler` (`history`) takes `Sample`s of them, keeps `Point`s for the history
and a `LabelRing` per tracked route or backend label.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..metrics import DURATION_BUCKETS, BackendStats, RouteStats

__all__ = [
    "POINT_BYTES",
    "Kind",
    "LabelRing",
    "Point",
    "Reading",
    "Sample",
    "error_rates",
    "latency",
    "merge_latency",
    "percentile_ms",
    "read_backend",
    "read_route",
    "success_rate",
    "sum_readings",
]

_NO_BUCKETS = (0,) * (len(DURATION_BUCKETS) + 1)
#: Bytes per per-label point: 3 uint32 counts and 3 float32 percentiles.
POINT_BYTES = 24
_UINT32_MAX = 0xFFFFFFFF

Kind = Literal["route", "backend"]


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
    total: Reading  # routed requests only
    routes: dict[str, Reading]  # every route label, admin and unmatched ones included
    backends: dict[str, Reading]
    admin: Reading = Reading()
    unmatched: Reading = Reading()


@dataclass(frozen=True, slots=True)
class Point:
    """One history step: what happened during it (deltas) and the state at its end."""

    at: float  # wall clock, end of the step
    seconds: float
    delta: Reading
    active_requests: int


class LabelRing:
    """One label's per-step points in two flat arrays used as a ring of ``capacity``
    points: counts (requests, 4xx, 5xx or upstream errors: uint32) and latency (p50,
    p95, p99 in ms: float32, NaN for a step without a measured request).

    The sampler appends one point per label step to every tracked label, idle or not,
    so the label's points are the sampler's label steps ``first`` to ``end - 1``; the
    last ``capacity`` of them are kept, step ``i`` at slot ``(i - first) % capacity``.
    """

    __slots__ = ("capacity", "counts", "end", "first", "last_active", "latency")

    def __init__(self, capacity: int, first: int) -> None:
        self.capacity = capacity
        self.first = first
        self.end = first
        self.last_active = first
        self.counts = array("I")
        self.latency = array("f")

    def append(self, requests: int, client: int, server: int, buckets: tuple[int, ...]) -> None:
        counts = (min(requests, _UINT32_MAX), min(client, _UINT32_MAX), min(server, _UINT32_MAX))
        lat = tuple(
            math.nan if v is None else v
            for v in (percentile_ms(buckets, q) for q in (0.50, 0.95, 0.99))
        )
        slot = (self.end - self.first) % self.capacity
        if 3 * slot == len(self.counts):
            self.counts.extend(counts)
            self.latency.extend(lat)
            if len(self.counts) == 3 * self.capacity:  # full: drop the growth slack
                self.counts = array("I", self.counts)
                self.latency = array("f", self.latency)
        else:
            self.counts[3 * slot : 3 * slot + 3] = array("I", counts)
            self.latency[3 * slot : 3 * slot + 3] = array("f", lat)
        if requests:
            self.last_active = self.end
        self.end += 1

    def start(self) -> int:
        """The oldest label step still held."""
        return max(self.first, self.end - self.capacity)

    def point(self, step: int) -> tuple[int, int, int, float, float, float]:
        """Counts and percentiles of label step ``step`` (``start() <= step < end``)."""
        at = 3 * ((step - self.first) % self.capacity)
        c, lat = self.counts, self.latency
        return c[at], c[at + 1], c[at + 2], lat[at], lat[at + 1], lat[at + 2]

    def nbytes(self) -> int:
        """Bytes of point data held (``POINT_BYTES`` per point; a full ring's arrays
        are exactly that size, a growing one's have the usual growth slack)."""
        return (
            self.counts.buffer_info()[1] * self.counts.itemsize
            + self.latency.buffer_info()[1] * self.latency.itemsize
        )


def merge_latency(
    points: list[tuple[int, int, int, float, float, float]], kind: Kind
) -> dict[str, float | None]:
    """Percentiles of several steps: exact for one step; for more, the steps' own
    percentiles averaged, weighted by the requests each measured."""
    out: dict[str, float | None] = {}
    for index, name in ((3, "p50"), (4, "p95"), (5, "p99")):
        total = weight = 0.0
        for point in points:
            value = point[index]
            # A backend's histogram holds responses only, not upstream errors.
            measured = point[0] - point[2] if kind == "backend" else point[0]
            if measured > 0 and not math.isnan(value):
                total += value * measured
                weight += measured
        out[name] = round(total / weight, 3) if weight else None
    return out


def sum_readings(readings: Iterable[Reading]) -> Reading:
    out = Reading()
    for reading in readings:
        out = out + reading
    return out


def error_rates(requests: int, client: int, server: int) -> dict[str, float | None]:
    """``error_rate`` (4xx + 5xx share) and ``server_error_rate`` (5xx share)."""
    if requests == 0:
        return {"error_rate": None, "server_error_rate": None}
    return {
        "error_rate": round((client + server) / requests, 6),
        "server_error_rate": round(server / requests, 6),
    }
