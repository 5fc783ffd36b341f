"""Cache section: a cache hit against the same route proxied.

    uv run python bench/run.py --only cache [--duration 10] [--quick]
    uv run python bench/cache.py [--duration 10] [--rounds 4] [--quick]

One gateway of the working tree, one nginx backend, two routes to it: `/plain/{id}`
(proxied) and `/cached/{id}`, the latter with the ``cache`` plugin (memory store,
``default_ttl_s`` since the backend states no freshness), warmed with one request so
every measured request is a hit. wrk -t1 -c50 in rounds alternating which route goes
first (see bench/chain.py), req/s and the gateway's CPU per request.

Target: the cache hit at >= 1.5x the proxied route's req/s.
"""

from __future__ import annotations

import sys
import urllib.request

from plugin_route import compare
from procs import BenchError

TARGET = 1.5

CACHE = {"name": "cache", "config": {"default_ttl_s": 3600}}


def _warm(url: str) -> None:
    """Two requests: the first stores the response, the second must be a hit."""
    state = None
    for _ in range(2):
        with urllib.request.urlopen(url, timeout=5) as response:
            state = response.headers.get("X-Cache")
    if state != "HIT":
        raise BenchError(f"the cached route answers X-Cache: {state} after warming")


def main(argv: list[str] | None = None) -> int:
    return compare(
        argv,
        description=__doc__.split("\n\n")[0],
        section="cache hit",
        name="cached",
        plugin=CACHE,
        target=TARGET,
        labels=("proxied", "hit"),
        warm=_warm,
    )


if __name__ == "__main__":
    sys.exit(main())
