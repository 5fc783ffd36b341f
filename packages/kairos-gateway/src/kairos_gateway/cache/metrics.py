"""Prometheus families of the response cache (``kairos_cache_*``), per store, read at
scrape time from the stores the live snapshot's routes use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import SharedCache

__all__ = ["CacheCollector", "cache_stats"]


def cache_stats(caches: Iterable[SharedCache]) -> list[dict[str, object]]:
    """One row per store: its kind and figures (``GET /api/cache``)."""
    rows: list[dict[str, object]] = []
    for cache in caches:
        store = cache.store
        s = store.stats
        rows.append(
            {
                "store": cache.describe,
                "entries": store.entries(),
                "bytes": store.bytes_used(),
                "hits": s.hits,
                "misses": s.misses,
                "stale": s.stale,
                "bypass": s.bypass,
                "stored": s.stored,
                "evictions": s.evictions,
                "store_errors": s.store_errors,
                "revalidations": s.revalidations,
                "revalidation_errors": s.revalidation_errors,
            }
        )
    return rows


_COUNTERS = (
    ("hits", "Requests answered from the cache"),
    ("misses", "Cacheable requests sent to the origin"),
    ("stale", "Stale responses served (stale-while-revalidate, stale-if-error)"),
    ("bypass", "Requests the cache did not answer (no-store, credentials)"),
    ("stored", "Responses stored"),
    ("evictions", "Entries evicted to stay within the store's bound"),
    ("store_errors", "Shared store calls that failed (the origin answered instead)"),
    ("revalidations", "Background revalidations started (stale-while-revalidate)"),
    ("revalidation_errors", "Background revalidations without a usable answer (stale kept)"),
)


class CacheCollector(Collector):
    def __init__(self, caches: Callable[[], Iterable[SharedCache]]) -> None:
        self.caches = caches

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        rows = cache_stats(self.caches())
        if not rows:
            return
        for name, doc in _COUNTERS:
            family = CounterMetricFamily(f"kairos_cache_{name}", doc, labels=["store"])
            for row in rows:
                family.add_metric([str(row["store"])], float(row[name]))  # type: ignore[arg-type]
            yield family
        size = GaugeMetricFamily(
            "kairos_cache_bytes", "Bytes held (this process's writes, for Redis)", labels=["store"]
        )
        entries = GaugeMetricFamily("kairos_cache_entries", "Entries held", labels=["store"])
        for row in rows:
            size.add_metric([str(row["store"])], float(row["bytes"]))  # type: ignore[arg-type]
            entries.add_metric([str(row["store"])], float(row["entries"]))  # type: ignore[arg-type]
        yield size
        yield entries
