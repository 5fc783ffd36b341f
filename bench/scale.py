"""Scale section: one gateway process under 50 to 10,000 concurrent client connections.

    uv run python bench/run.py --only scale [--baseline REF] [--duration 10]
    uv run python bench/scale.py [--baseline REF] [--duration 10] [--connections 50,1000]

One nginx backend, one gateway (one plain route) with `connection_limits` sized for the
load (1024 upstream connections, a queue of 20,000 waiting up to 30 s), wrk with
keep-alive connections and a 30 s request timeout. For each client-connection count:
req/s, p50, p99, errors (socket errors + non-2xx), the gateway's peak RSS, and the
upstream connections it opened during the run. With ``--baseline REF`` the same rows
are measured for the code of a git ref (checked out with `git worktree`), each count
alternating between the two gateways.

Target: req/s at 10,000 connections >= 0.70x the same gateway's figure at 50.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from chain import baseline_tree, drop_tree, source_path
from procs import BenchError, http_request, log, probe, rss_kib
from targets import BACKEND_PATH, Backend, Gateway
from wrk import INSTALL_HINT, run_wrk, wrk_path

CONNECTIONS = (50, 1000, 5000, 10000)
TARGET = 0.70
WRK_TIMEOUT_S = 30


@dataclass
class Row:
    side: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    opened: int


def _config(port: int, *, limits: bool = True) -> dict[str, object]:
    """``limits=False`` for a baseline that predates ``connection_limits``."""
    extra: dict[str, object] = {}
    if limits:
        extra["connection_limits"] = {
            "max_connections": 1024,
            "max_pending": 20000,
            "pending_timeout_ms": 30000,
        }
    return {
        "version": 1,
        **extra,
        "routers": [
            {
                "external_path": "/plain/{id}",
                "internal_path": "/users/{id}",
                "methods": ["GET"],
                "backends": [{"host": "http://127.0.0.1", "port": port}],
            }
        ],
    }


def _opened(gateway: Gateway) -> int:
    """Upstream connections opened so far, from /api/backends' ``connections`` block;
    -1 for a version without it."""
    status, _, body = http_request(gateway.port, "/api/backends")
    if status != 200:
        raise BenchError(f"/api/backends answered {status}")
    total = 0
    for item in json.loads(body)["backends"]:
        connections = item.get("connections") or {}
        if "opened_total" not in connections:
            return -1
        total += int(connections["opened_total"])
    return total


def _peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.wait(0.25):
        value = rss_kib(pid)
        if value is not None:
            out.append(value)


def measure(side: str, gateway: Gateway, connections: int, duration_s: int) -> Row:
    url = gateway.url_for("/plain/123")
    run_wrk(url, connections, 2, timeout_s=WRK_TIMEOUT_S)  # warm-up at this concurrency
    before = _opened(gateway)
    samples: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_peak_rss, args=(gateway.pid, stop, samples))
    sampler.start()
    try:
        result = run_wrk(url, connections, duration_s, timeout_s=WRK_TIMEOUT_S)
    finally:
        stop.set()
        sampler.join(timeout=5)
    opened = _opened(gateway) - before if before >= 0 else -1
    row = Row(
        side,
        connections,
        result.rps,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        max(samples, default=0) / 1024,
        opened,
    )
    log(
        f"  {side} c={connections}: {row.rps:,.0f} req/s p50 {row.p50_ms:.1f} ms "
        f"p99 {row.p99_ms:.1f} ms errors {row.errors} RSS {row.rss_mb:.0f} MB "
        f"opened {row.opened}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git ref to measure side by side")
    parser.add_argument(
        "--baseline-limits",
        action="store_true",
        help="give the baseline the connection_limits block too (refs that know it)",
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument(
        "--connections", default=",".join(map(str, CONNECTIONS)), help="comma-separated"
    )
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    counts = [int(c) for c in args.connections.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-scale-"))
    backend: Backend | None = None
    gateways: dict[str, Gateway] = {}
    tree: Path | None = None
    rows: list[Row] = []
    try:
        backend = Backend(workdir, name="scale-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        if args.baseline:
            tree = baseline_tree(args.baseline, workdir)
            gateways["before"] = Gateway(
                workdir,
                _config(backend.port, limits=args.baseline_limits),
                name="gw-before",
                env={"PYTHONPATH": source_path(tree)},
            )
        gateways["after"] = Gateway(workdir, _config(backend.port), name="gw-after")
        for connections in counts:
            for side, gateway in gateways.items():
                rows.append(measure(side, gateway, connections, args.duration))
    except BenchError as exc:
        print(f"scale bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        for gateway in gateways.values():
            gateway.stop()
        if backend is not None:
            backend.stop()
        if tree is not None:
            drop_tree(tree)
    print(f"\nScale section (wrk -t1, keep-alive, {args.duration}s per row)")
    print("| side | conns | req/s | p50 ms | p99 ms | errors | RSS MB | upstream opened |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.side} | {r.connections:,} | {r.rps:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.errors} | {r.rss_mb:.0f} | "
            f"{r.opened if r.opened >= 0 else 'n/a'} |"
        )
    for side in gateways:
        mine = {r.connections: r.rps for r in rows if r.side == side}
        if 50 in mine and 10000 in mine:
            ratio = mine[10000] / mine[50]
            verdict = "PASS" if ratio >= TARGET else "MISS"
            print(f"{side}: 10,000 / 50 connections = {ratio:.2f}x (target >= {TARGET}) {verdict}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
