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

import argparse
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

from chain import _route, _summary, alternate
from procs import BenchError, log, probe
from targets import BACKEND_PATH, Backend, Gateway
from wrk import INSTALL_HINT, wrk_path

TARGET = 1.5

CACHE = {"name": "cache", "config": {"default_ttl_s": 3600}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-cache-"))
    backend: Backend | None = None
    gateway: Gateway | None = None
    try:
        backend = Backend(workdir, name="cache-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        cached = _route("/cached/{id}", backend.port)
        cached["plugins"] = [CACHE]
        config = {"version": 1, "routers": [_route("/plain/{id}", backend.port), cached]}
        log("cache: a hit (memory store) vs the same route proxied, one gateway")
        gateway = Gateway(workdir, config, name="gw-cache")
        hit_url = gateway.url_for("/cached/123")
        for _ in range(2):
            with urllib.request.urlopen(hit_url, timeout=5) as response:
                state = response.headers.get("X-Cache")
        if state != "HIT":
            raise BenchError(f"the cached route answers X-Cache: {state} after warming")
        runs = alternate(
            {
                "proxied": (gateway.url_for("/plain/123"), gateway.pid),
                "hit": (hit_url, gateway.pid),
            },
            duration,
            rounds,
            2 if args.quick else 3,
        )
        line = "cache hit " + _summary(runs, "proxied", "hit", TARGET)
    except BenchError as exc:
        print(f"cache bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
        if backend is not None:
            backend.stop()
    print(f"\nCache section (wrk -t1 -c50, {duration}s x {rounds} rounds)")
    print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
