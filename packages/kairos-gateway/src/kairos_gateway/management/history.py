"""Metrics for the UI: a live snapshot over recent windows, and a 24-hour history.

`MetricsSampler` reads the gateway's cumulative counters every ``interval_s`` (1 s by
default) into a short ring covering the last minute; windowed figures (req/s over 10 s
and 1 min, percentiles over the last minute) are differences between the live reading
and the sample taken that long ago. Every ``step_s`` (10 s) it also appends one point,
the deltas since the previous point, to the history ring. Both rings are `deque`s with
a fixed ``maxlen`` (the history holds ``retention_s / step_s`` points: 8,640 for 24 h),
so memory is bounded by construction whatever the uptime.

Per route label and per backend address it keeps a coarser history too (`LabelRing`):
one point per ``label_step_s`` (6 history steps: 60 s by default) for ``retention_s``,
so at most 1,440 points per label for 24 h. A point is three uint32 counts (requests,
4xx, 5xx or upstream errors) and three float32 percentiles (p50/p95/p99 in ms) in two
flat `array`s: 24 bytes. At most `MAX_LABELS` (200) route labels and 200 backend
labels are tracked; a label starts being tracked at its first step with traffic, and
when the cap is reached the label idle the longest is evicted (a new label waits when
every tracked one was active in that very step). The per-label history is therefore at
most 2 x 200 x 1,440 x 24 B = 13.8 MB of arrays (plus about 0.5 KB of objects per
label) whatever the uptime and however many labels come and go; in practice it is
24 B x 1,440 = 34.6 KB per label that had traffic.

Percentiles come from the duration histograms, interpolated linearly inside a bucket,
so they are as precise as the buckets (`metrics.DURATION_BUCKETS`).

The totals (snapshot and history) count routed requests only (`metrics.traffic_of`):
the admin tools' own traffic (the UI polling this API, CLI and SDK calls, probes of
`/health`, `/ready`, `/live`, `/metrics` scrapes) and requests no route served would
otherwise make an idle gateway look busy, failing and slow. The snapshot gives those two
classes their own small figures (``admin``, ``unmatched``); their per-label history
stays available under their labels (``management``, ``unmatched``, the ops paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..metrics import ADMIN, ROUTED, UNMATCHED, traffic_of
from .readings import (
    Kind,
    LabelRing,
    Point,
    Reading,
    Sample,
    error_rates,
    latency,
    merge_latency,
    read_backend,
    read_route,
    success_rate,
    sum_readings,
)

if TYPE_CHECKING:
    from ..runtime import Runtime
#: Per-label history: one point per this many history steps (60 s with the defaults).
LABEL_STEP_FACTOR = 6
#: Route labels tracked, and backend labels tracked (each; the idlest is evicted).
MAX_LABELS = 200


class MetricsSampler:
    #: The label kinds with a per-label history (query parameters of the endpoint).
    KINDS: tuple[Kind, ...] = ("route", "backend")

    def __init__(
        self,
        runtime: Runtime,
        *,
        uptime_s: Callable[[], float],
        interval_s: float = 1.0,
        step_s: float = 10.0,
        retention_s: float = 86_400.0,
        label_step_s: float | None = None,
        max_labels: int = MAX_LABELS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self._uptime_s = uptime_s
        self.interval_s = interval_s
        self.step_s = max(step_s, interval_s)
        self.retention_s = retention_s
        self._clock = clock
        self._wall = wall
        # One minute of samples, plus one so a full minute back is always there.
        self.recent: deque[Sample] = deque(maxlen=math.ceil(60 / interval_s) + 2)
        self.history: deque[Point] = deque(maxlen=max(1, math.ceil(retention_s / self.step_s)))
        self._last_point: tuple[float, Reading] | None = None
        # Per-label history: (wall clock at the end, seconds) of each label step, and
        # one ring per tracked label, aligned on those steps.
        self.label_step_s = max(
            self.step_s, LABEL_STEP_FACTOR * self.step_s if label_step_s is None else label_step_s
        )
        self.label_capacity = max(1, math.ceil(retention_s / self.label_step_s))
        self.max_labels = max(1, max_labels)
        self.label_steps: deque[tuple[float, float]] = deque(maxlen=self.label_capacity)
        self.label_steps_taken = 0
        self.labels: dict[Kind, dict[str, LabelRing]] = {"route": {}, "backend": {}}
        self._last_label_sample: Sample | None = None
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self.samples_taken = 0

    # -- reading ---------------------------------------------------------------------

    def read(self) -> Sample:
        # The metrics keep one object per label for the process's life, so totals
        # include routes and backends since removed.
        metrics = self.runtime.metrics
        routes: dict[str, Reading] = {}
        by_traffic: dict[str, list[Reading]] = {ROUTED: [], ADMIN: [], UNMATCHED: []}
        for stats in metrics.routes():
            reading = routes[stats.label] = read_route(stats)
            by_traffic[stats.traffic].append(reading)
        backends = {stats.label: read_backend(stats) for stats in metrics.backends()}
        return Sample(
            self._clock(),
            sum_readings(by_traffic[ROUTED]),
            routes,
            backends,
            admin=sum_readings(by_traffic[ADMIN]),
            unmatched=sum_readings(by_traffic[UNMATCHED]),
        )

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
                    self.runtime.metrics.active_requests,
                )
            )
            self._last_point = (sample.at, sample.total)
        last_labels = self._last_label_sample
        if last_labels is None:
            self._last_label_sample = sample
        elif sample.at - last_labels.at >= self.label_step_s - self.interval_s / 2:
            self._label_step(last_labels, sample)
            self._last_label_sample = sample

    def _label_step(self, before: Sample, now: Sample) -> None:
        step = self.label_steps_taken
        for rings, readings, old in (
            (self.labels["route"], now.routes, before.routes),
            (self.labels["backend"], now.backends, before.backends),
        ):
            deltas = {
                label: reading - old.get(label, Reading()) for label, reading in readings.items()
            }
            for label, ring in rings.items():
                delta = deltas.get(label, Reading())
                ring.append(delta.requests, delta.client_errors, delta.server_errors, delta.buckets)
            for label, delta in deltas.items():
                if delta.requests == 0 or label in rings:
                    continue
                if len(rings) >= self.max_labels:
                    idlest = min(rings, key=lambda name: rings[name].last_active)
                    if rings[idlest].last_active >= step:
                        continue  # every tracked label was active in this step
                    del rings[idlest]
                ring = rings[label] = LabelRing(self.label_capacity, step)
                ring.append(delta.requests, delta.client_errors, delta.server_errors, delta.buckets)
        self.label_steps.append((self._wall(), now.at - before.at))
        self.label_steps_taken = step + 1

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
        runtime = self.runtime
        now = self.read()
        ten = self._back(now.at, 10)
        minute = self._back(now.at, 60)

        def rate(old: Sample | None, delta: Reading) -> float:
            if old is None or now.at <= old.at:
                return 0.0
            return round(delta.requests / (now.at - old.at), 3)

        minute_total = now.total - minute.total if minute is not None else Reading()

        def aside(part: Callable[[Sample], Reading]) -> dict[str, object]:
            """The small figures of traffic kept out of the totals."""
            reading = part(now)
            return {
                "requests": reading.requests,
                "client_errors": reading.client_errors,
                "server_errors": reading.server_errors,
                "requests_per_second": {
                    "last_10s": rate(ten, reading - part(ten) if ten is not None else Reading()),
                    "last_1m": rate(
                        minute, reading - part(minute) if minute is not None else Reading()
                    ),
                },
            }

        routes = []
        for label, reading in sorted(now.routes.items()):
            if reading.requests == 0 or traffic_of(label) != ROUTED:
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
        states = {state.address: state for state in runtime.registry}
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
            "uptime_s": round(self._uptime_s(), 3),
            "config_version": runtime.snapshot.generation,
            "active_requests": runtime.metrics.active_requests,
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
            "admin": aside(lambda sample: sample.admin),
            "unmatched": aside(lambda sample: sample.unmatched),
        }

    def known(self, kind: Kind, label: str) -> bool:
        """Whether ``label`` is tracked, or is one the gateway has metrics for."""
        if label in self.labels[kind]:
            return True
        metrics = self.runtime.metrics
        stats = metrics.routes() if kind == "route" else metrics.backends()
        return any(s.label == label for s in stats)

    def label_series(
        self, kind: Kind, label: str, range_s: float, step_s: float
    ) -> dict[str, object]:
        """Like `series`, for one route label or backend address, from its per-label
        history (steps of ``label_step_s``; no points for a label not tracked)."""
        factor = max(1, round(step_s / self.label_step_s))
        since = self._wall() - range_s
        ring = self.labels[kind].get(label)
        steps = self.label_steps
        base = self.label_steps_taken - len(steps)  # label step index of steps[0]
        chosen: list[tuple[float, float, tuple[int, int, int, float, float, float]]] = []
        if ring is not None:
            for index in range(max(ring.start(), base), ring.end):
                at, seconds = steps[index - base]
                if at > since:
                    chosen.append((at, seconds, ring.point(index)))
        out = []
        for end in range(len(chosen), 0, -factor):
            group = chosen[max(0, end - factor) : end]
            points = [p for _, _, p in group]
            requests = sum(p[0] for p in points)
            client = sum(p[1] for p in points)
            server = sum(p[2] for p in points)
            seconds = sum(s for _, s, _ in group)
            success = requests - client - server
            out.append(
                {
                    "timestamp": _iso(group[-1][0]),
                    "requests": requests,
                    "requests_per_second": round(requests / seconds, 3) if seconds else 0.0,
                    "client_errors": client,
                    "server_errors": server,
                    "success_rate": None if requests == 0 else round(success / requests, 6),
                    **error_rates(requests, client, server),
                    "latency_ms": merge_latency(points, kind),
                    "active_requests": None,
                    "upstream_errors": server if kind == "backend" else None,
                }
            )
        out.reverse()
        return {
            "range_s": range_s,
            "step_s": factor * self.label_step_s,
            "kind": kind,
            "label": label,
            "points": out,
        }

    def label_bytes(self) -> int:
        """Bytes held by the per-label arrays now (at most
        ``2 * max_labels * label_capacity * POINT_BYTES``)."""
        return sum(ring.nbytes() for rings in self.labels.values() for ring in rings.values())

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
            delta = sum_readings(p.delta for p in group)
            seconds = sum(p.seconds for p in group)
            out.append(
                {
                    "timestamp": _iso(group[-1].at),
                    "requests": delta.requests,
                    "requests_per_second": round(delta.requests / seconds, 3) if seconds else 0.0,
                    "client_errors": delta.client_errors,
                    "server_errors": delta.server_errors,
                    "success_rate": success_rate(delta),
                    **error_rates(delta.requests, delta.client_errors, delta.server_errors),
                    "latency_ms": latency(delta.buckets),
                    "active_requests": group[-1].active_requests,
                }
            )
        out.reverse()
        return {
            "range_s": range_s,
            "step_s": factor * self.step_s,
            "kind": "total",
            "points": out,
        }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
