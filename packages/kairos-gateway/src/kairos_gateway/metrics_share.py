"""Metrics across worker processes: each publishes its figures, any one reports all.

Each worker writes its counters and gauges to ``<dir>/<pid>.json`` once a second (and
on shutdown), atomically (temporary file, then rename). A scrape merges the scraped
worker's live figures with every other file: counters and histograms are summed, so
`/metrics` shows the whole gateway whichever worker answers, at most a second behind
for the others. A dead worker's file stays: its counters keep counting toward the
totals (Prometheus counters must never go down), while its gauges (active requests,
in-flight) are left out. Backend gauges combine as: up only if every worker sees the
backend up, the worst breaker state, in-flight summed, ejected if any worker ejected
it (each worker detects outliers on its own traffic).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .metrics import BackendStats, MetricsView, RouteStats

# Breaker state values are 0 closed, 1 open, 2 half-open; open is the worst.
_BREAKER_RANK = {0: 0, 2: 1, 1: 2}


def _worse(a: int, b: int) -> int:
    return a if _BREAKER_RANK.get(a, 0) >= _BREAKER_RANK.get(b, 0) else b


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dump_route(stats: RouteStats) -> dict[str, Any]:
    return {
        "requests": [[m, s, c] for (m, s), c in stats.requests.items()],
        "counts": stats.duration.counts,
        "sum": stats.duration.sum,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
    }


def _add_route(into: RouteStats, data: dict[str, Any]) -> None:
    for method, status, count in data["requests"]:
        key = (method, status)
        into.requests[key] = into.requests.get(key, 0) + count
    for i, count in enumerate(data["counts"]):
        into.duration.counts[i] += count
    into.duration.sum += data["sum"]
    into.bytes_in += data["bytes_in"]
    into.bytes_out += data["bytes_out"]
    for reason, count in data["retries"].items():
        into.retries[reason] = into.retries.get(reason, 0) + count
    into.rate_limited += data["rate_limited"]


def _dump_backend(stats: BackendStats) -> dict[str, Any]:
    return {
        "counts": stats.duration.counts,
        "sum": stats.duration.sum,
        "errors": stats.errors,
        "ejections": stats.ejections,
    }


def _add_backend(into: BackendStats, data: dict[str, Any]) -> None:
    for i, count in enumerate(data["counts"]):
        into.duration.counts[i] += count
    into.duration.sum += data["sum"]
    for kind, count in data["errors"].items():
        into.errors[kind] = into.errors.get(kind, 0) + count
    into.ejections += data.get("ejections", 0)


class MetricsShare:
    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self._path = directory / f"{self.pid}.json"

    def publish(self, view: MetricsView) -> None:
        data = {
            "pid": self.pid,
            "routes": {r.label: _dump_route(r) for r in view.routes},
            "backends": {b.label: _dump_backend(b) for b in view.backends},
            "active_requests": view.active_requests,
            "backend_gauges": view.backend_gauges,
            "pool_gauges": view.pool_gauges,
            "ejected_gauges": view.ejected_gauges,
            "rate_limit_store_errors": view.rate_limit_store_errors,
        }
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        temporary.replace(self._path)

    def _peers(self) -> list[dict[str, Any]]:
        peers = []
        for path in self.directory.glob("*.json"):
            if path == self._path:
                continue
            try:
                peers.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced right now, or half-written by a killed worker
        return peers

    def merged(self, own: MetricsView) -> MetricsView:
        routes: dict[str, RouteStats] = {}
        backends: dict[str, BackendStats] = {}
        for stats in own.routes:
            _add_route(routes.setdefault(stats.label, RouteStats(stats.label)), _dump_route(stats))
        for b in own.backends:
            _add_backend(backends.setdefault(b.label, BackendStats(b.label)), _dump_backend(b))
        active = own.active_requests
        # address -> [up, breaker state, in-flight]
        gauges: dict[str, list[int]] = {a: [u, b, i] for a, u, b, i in own.backend_gauges}
        store_errors = own.rate_limit_store_errors
        # address -> [open, idle, pending, opened, saturated, queue seconds]
        pools: dict[str, list[float]] = {g[0]: list(g[1:]) for g in own.pool_gauges}
        ejected: dict[str, int] = dict(own.ejected_gauges)
        for peer in self._peers():
            for label, data in peer["routes"].items():
                _add_route(routes.setdefault(label, RouteStats(label)), data)
            for label, data in peer["backends"].items():
                _add_backend(backends.setdefault(label, BackendStats(label)), data)
            store_errors += peer["rate_limit_store_errors"]
            alive = _alive(peer["pid"])
            for address, *figures in peer.get("pool_gauges", ()):
                # Totals count for dead workers too; gauges only for live ones.
                pool = pools.setdefault(address, [0, 0, 0, 0, 0, 0.0])
                for i in range(0 if alive else 3, 6):
                    pool[i] += figures[i]
            if not alive:
                continue
            active += peer["active_requests"]
            for address, up, breaker, inflight in peer["backend_gauges"]:
                seen = gauges.setdefault(address, [up, breaker, 0])
                seen[0] = min(seen[0], up)
                seen[1] = _worse(seen[1], breaker)
                seen[2] += inflight
            for address, is_ejected in peer.get("ejected_gauges", ()):
                ejected[address] = max(ejected.get(address, 0), is_ejected)
        return MetricsView(
            routes=list(routes.values()),
            backends=list(backends.values()),
            active_requests=active,
            backend_gauges=[(a, u, b, i) for a, (u, b, i) in gauges.items()],
            rate_limit_store_errors=store_errors,
            pool_gauges=[
                (a, int(o), int(i), int(p), int(n), int(s), q)
                for a, (o, i, p, n, s, q) in pools.items()
            ],
            ejected_gauges=list(ejected.items()),
        )
