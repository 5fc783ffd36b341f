"""``/api/cache``: the response cache's figures, and purging.

``GET /api/cache`` lists each store in use (memory or Redis) with its counters;
``DELETE /api/cache?key=K`` | ``?route=/users/{id}`` | ``?tag=T`` removes the matching
entries from every store the live configuration uses (a Redis store for every gateway
sharing it)
and answers ``{"purged": n}``. With ``--workers N`` the purge is journaled for the
other workers' memory stores too (`cache.workers`), and the answer counts what they
removed within a second, with ``workers`` and ``workers_pending``.
"""

from __future__ import annotations

from kairos_core import BadRequest, ServiceUnavailable
from kairos_core.cache import CachePurged, CacheStatus

from ..cache import Purge, SharedCache
from ..cache.metrics import cache_stats
from ..cache.workers import WorkerPurges
from ..messages import ApiRequest, ApiResponse

__all__ = ["cache_figures", "purge_cache"]

_SELECTORS = ("key", "route", "tag")


def cache_figures(caches: list[SharedCache]) -> ApiResponse:
    return ApiResponse.model(200, CacheStatus.model_validate({"stores": cache_stats(caches)}))


async def purge_cache(
    request: ApiRequest, caches: list[SharedCache], workers: WorkerPurges | None = None
) -> ApiResponse:
    params = request.query_params()
    unknown = sorted(set(params) - set(_SELECTORS))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; known: key, route, tag")
    given = {name: params[name] for name in _SELECTORS if params.get(name)}
    if len(given) != 1:
        raise BadRequest("give exactly one of key, route or tag (e.g. ?tag=products)")
    what = Purge(**given)
    purged = 0
    failed = []
    for cache in caches:
        try:
            purged += await cache.store.purge(what)
        except Exception as exc:  # a shared store that is down
            failed.append(f"{cache.describe}: {type(exc).__name__}")
    if failed:
        raise ServiceUnavailable(
            f"purged {purged} entries, but a store failed ({', '.join(failed)}): try again"
        )
    if workers is None:
        return ApiResponse.model(200, CachePurged(purged=purged, **given))
    others = await workers.announce(what)
    return ApiResponse.model(
        200,
        CachePurged(
            purged=purged + others.purged,
            workers=1 + others.answered,
            workers_pending=others.pending,
            **given,
        ),
    )
