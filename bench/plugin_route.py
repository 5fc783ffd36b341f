"""One plugin route against a plain route on the same gateway: the harness of the
transform and cache sections.

One gateway of the working tree, one nginx backend, two routes to it: `/plain/{id}` and
`/{name}/{id}` with the plugin entry given. wrk -t1 -c50 in rounds alternating which
route goes first (see bench/chain.py); the summary line gives req/s and the gateway's
CPU per request, with the verdict against the target.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain import _route, _summary, alternate
from procs import BenchError, log, probe
from targets import BACKEND_PATH, Backend, Gateway
from wrk import INSTALL_HINT, wrk_path


def compare(
    argv: list[str] | None,
    *,
    description: str,
    section: str,
    name: str,
    plugin: dict[str, Any],
    target: float,
    labels: tuple[str, str] = ("plain", "plugin"),
    warm: Callable[[str], None] | None = None,
) -> int:
    """Run the comparison; ``warm(url)`` prepares the plugin route (and may raise
    `BenchError`). Exit codes as bench/chain.py's."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    workdir = Path(tempfile.mkdtemp(prefix=f"kairos-bench-{name}-"))
    backend: Backend | None = None
    gateway: Gateway | None = None
    plain, other = labels
    try:
        backend = Backend(workdir, name=f"{name}-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        with_plugin = _route(f"/{name}/{{id}}", backend.port)
        with_plugin["plugins"] = [plugin]
        config = {"version": 1, "routers": [_route("/plain/{id}", backend.port), with_plugin]}
        log(f"{section}: {other} vs {plain}, one gateway")
        gateway = Gateway(workdir, config, name=f"gw-{name}")
        url = gateway.url_for(f"/{name}/123")
        if warm is not None:
            warm(url)
        runs = alternate(
            {plain: (gateway.url_for("/plain/123"), gateway.pid), other: (url, gateway.pid)},
            duration,
            rounds,
            2 if args.quick else 3,
        )
        line = f"{section} " + _summary(runs, plain, other, target)
    except BenchError as exc:
        print(f"{section} bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
        if backend is not None:
            backend.stop()
    print(f"\n{section.capitalize()} section (wrk -t1 -c50, {duration}s x {rounds} rounds)")
    print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0
