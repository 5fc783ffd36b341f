"""Transform section: what the bundled ``transform`` plugin costs a route.

    uv run python bench/run.py --only transform [--duration 10] [--quick]
    uv run python bench/transform.py [--duration 10] [--rounds 4] [--quick]

One gateway of the working tree, one nginx backend, two routes to it: `/plain/{id}`
and `/transform/{id}`, the latter with the ``transform`` plugin doing four request
header operations (set from a header template, add, remove, rename) and a path rewrite
with a capture group. wrk -t1 -c50 in rounds alternating which route goes first (see
bench/chain.py), req/s and the gateway's CPU per request.

Target: the transform route at >= 0.93x the plain route's req/s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from chain import _route, _summary, alternate
from procs import BenchError, log, probe
from targets import BACKEND_PATH, Backend, Gateway
from wrk import INSTALL_HINT, wrk_path

TARGET = 0.93

TRANSFORM = {
    "name": "transform",
    "config": {
        "request": {
            "headers": {
                "set": {"X-Tenant": "${header.Host}"},
                "add": {"X-Gateway": "kairos"},
                "remove": ["User-Agent"],
                "rename": {"Accept": "X-Accept"},
            },
            "path": {"pattern": r"/users/(\d+)", "replacement": r"/v2/users/\1"},
        }
    },
}


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
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-transform-"))
    backend: Backend | None = None
    gateway: Gateway | None = None
    try:
        backend = Backend(workdir, name="transform-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        transformed = _route("/transform/{id}", backend.port)
        transformed["plugins"] = [TRANSFORM]
        config = {"version": 1, "routers": [_route("/plain/{id}", backend.port), transformed]}
        log("transform: 4 header operations + a path rewrite vs the plain route, one gateway")
        gateway = Gateway(workdir, config, name="gw-transform")
        runs = alternate(
            {
                "plain": (gateway.url_for("/plain/123"), gateway.pid),
                "transform": (gateway.url_for("/transform/123"), gateway.pid),
            },
            duration,
            rounds,
            2 if args.quick else 3,
        )
        line = "transform route " + _summary(runs, "plain", "transform", TARGET)
    except BenchError as exc:
        print(f"transform bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
        if backend is not None:
            backend.stop()
    print(f"\nTransform section (wrk -t1 -c50, {duration}s x {rounds} rounds)")
    print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
