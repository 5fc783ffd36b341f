"""Resilience section: the load-balancing strategies under load, on one gateway.

Two parts (see bench/README.md):

* **strategies**: three fast backends, one route per `load_balancing_strategy` over all
  three, and a single-backend route as the baseline; wrk -c50 against each.
* **slow**: two of the fast backends plus one that answers 50 ms late
  (`pybackend.py --delay-ms`), a `round_robin` and a `latency_aware` route over them;
  wrk -c50 and -c10 against each.

Each backend counts the requests it answered (nginx `stub_status`, or the Python
backend's `/__bench_stats`), read right before and after every measured run, which
gives each backend's share of that run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from procs import BenchError, log, probe, tail
from report import BackendShare, LbRun, ResilienceResults
from targets import BACKEND_PATH, Backend, Gateway
from wrk import WrkResult, run_wrk

STRATEGIES: tuple[str, ...] = (
    "round_robin",
    "least_connections",
    "random",
    "weighted",
    "ip_hash",
    "latency_aware",
)
#: The two strategies compared with one slow backend in the pool.
SLOW_STRATEGIES: tuple[str, ...] = ("round_robin", "latency_aware")
#: Backend weights of the `weighted` route (fast1, fast2, fast3); the others use 1.
WEIGHTS: tuple[int, ...] = (3, 2, 1)
SLOW_DELAY_MS = 50.0
STRATEGY_CONNECTIONS = 50
SLOW_CONNECTIONS: tuple[int, ...] = (50, 10)
SLOW_CONNECTIONS_QUICK: tuple[int, ...] = (50,)

_INTERNAL = "/users/{id}"
_ID = "123"


def single_path() -> str:
    return f"/single/{_ID}"


def strategy_path(strategy: str) -> str:
    return f"/s/{strategy}/{_ID}"


def slow_path(strategy: str) -> str:
    return f"/slow/{strategy}/{_ID}"


def _backend(port: int, weight: int = 1) -> dict[str, object]:
    return {"host": "http://127.0.0.1", "port": port, "weight": weight}


def resilience_config(fast_ports: Sequence[int], slow_port: int) -> dict[str, object]:
    """Single-backend baseline, one route per strategy over the three fast backends, and
    the two slow-pool routes (fast1, fast2, slow). Every route maps to `/users/{id}`."""
    if len(fast_ports) != 3:
        raise ValueError("three fast backends expected")
    routers: list[dict[str, object]] = [
        {
            "external_path": "/single/{id}",
            "internal_path": _INTERNAL,
            "methods": ["GET"],
            "backends": [_backend(fast_ports[0])],
        }
    ]
    for strategy in STRATEGIES:
        weights = WEIGHTS if strategy == "weighted" else (1, 1, 1)
        routers.append(
            {
                "external_path": f"/s/{strategy}/{{id}}",
                "internal_path": _INTERNAL,
                "methods": ["GET"],
                "backends": [_backend(p, w) for p, w in zip(fast_ports, weights, strict=True)],
                "load_balancing_strategy": strategy,
            }
        )
    for strategy in SLOW_STRATEGIES:
        routers.append(
            {
                "external_path": f"/slow/{strategy}/{{id}}",
                "internal_path": _INTERNAL,
                "methods": ["GET"],
                "backends": [_backend(p) for p in (*fast_ports[:2], slow_port)],
                "load_balancing_strategy": strategy,
            }
        )
    return {"version": 1, "routers": routers}


def _requests(backends: Sequence[Backend]) -> list[int]:
    return [b.stats().requests for b in backends]


def _load_route(
    res: ResilienceResults,
    gateway: Gateway,
    section: str,
    route: str,
    path: str,
    backends: Sequence[Backend],
    connections: Sequence[int],
    duration_s: int,
    warmup_s: int,
) -> None:
    """Probe, warm up at 50 connections, then one measured run per connection count;
    each backend's request counter is read around every measured run."""
    url = gateway.url_for(path)
    probe(url)
    log(f"resilience {section}/{route}: warm-up {warmup_s}s  {url}")
    warmup: WrkResult | None = run_wrk(url, STRATEGY_CONNECTIONS, warmup_s)
    for conns in connections:
        log(f"resilience {section}/{route}: {conns} connection(s), {duration_s}s")
        before = _requests(backends)
        run = run_wrk(url, conns, duration_s)
        after = _requests(backends)
        # Each stats query is one request of its own: drop the "after" one.
        shares = [
            BackendShare(b.name, a - p - 1) for b, p, a in zip(backends, before, after, strict=True)
        ]
        lb = LbRun(section, route, path, run, shares, warmup=warmup)
        warmup = None  # counted once, with the route's first run
        res.runs.append(lb)
        split = "/".join(str(s.requests) for s in shares)
        log(
            f"  {run.rps:,.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms  "
            f"errors {run.errors}  backend requests {split}"
        )
        if not gateway.child.alive():
            raise BenchError(
                f"resilience gateway exited during {section}/{route} "
                f"(code {gateway.child.proc.returncode})"
            )


def bench_resilience(
    res: ResilienceResults,
    workdir: Path,
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
    prefer_nginx: bool,
) -> None:
    """Fill `res` run by run (a failure leaves the finished rows); stops every process."""
    started: list[Backend] = []
    try:
        fast: list[Backend] = []
        for i in range(3):
            backend = Backend(workdir, prefer_nginx=prefer_nginx, name=f"fast{i + 1}")
            started.append(backend)
            fast.append(backend)
        slow = Backend(workdir, prefer_nginx=False, name="slow", delay_ms=SLOW_DELAY_MS)
        started.append(slow)
        for b in fast:
            kind = "nginx (worker_processes 1, return 200)" if b.kind == "nginx" else "Python"
            res.backends[b.name] = f"{kind} on 127.0.0.1:{b.port}"
        res.backends[slow.name] = (
            f"Python (bench/pybackend.py --delay-ms {SLOW_DELAY_MS:g}) on 127.0.0.1:{slow.port}"
        )
        res.weights = list(WEIGHTS)
        res.slow_delay_ms = SLOW_DELAY_MS
        for b in started:  # each answers the benchmark path before any gateway is started
            probe(f"http://127.0.0.1:{b.port}{BACKEND_PATH}")
        _run_gateway(res, workdir, fast, slow, duration_s, warmup_s, quick=quick)
    finally:
        for b in started:
            b.stop()


def _run_gateway(
    res: ResilienceResults,
    workdir: Path,
    fast: Sequence[Backend],
    slow: Backend,
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
) -> None:
    config = resilience_config([b.port for b in fast], slow.port)
    try:
        gateway = Gateway(workdir, config, name="gateway-lb")
    except BenchError:
        res.gateway_stderr_tail = tail(workdir / "gateway-lb.stderr", 40)
        raise
    res.gateway_routes = gateway.routes
    log(f"resilience gateway pid {gateway.pid} on port {gateway.port} ({gateway.routes} routes)")
    failed = True
    try:
        _load_route(
            res,
            gateway,
            "strategies",
            "single",
            single_path(),
            fast,
            (STRATEGY_CONNECTIONS,),
            duration_s,
            warmup_s,
        )
        for strategy in STRATEGIES:
            _load_route(
                res,
                gateway,
                "strategies",
                strategy,
                strategy_path(strategy),
                fast,
                (STRATEGY_CONNECTIONS,),
                duration_s,
                warmup_s,
            )
        pool = (*fast[:2], slow)
        conns = SLOW_CONNECTIONS_QUICK if quick else SLOW_CONNECTIONS
        for strategy in SLOW_STRATEGIES:
            _load_route(
                res,
                gateway,
                "slow",
                strategy,
                slow_path(strategy),
                pool,
                conns,
                duration_s,
                warmup_s,
            )
        failed = False
    finally:
        alive = gateway.child.alive()
        res.gateway_exit = gateway.stop()
        if not alive:
            res.notes.append(f"the resilience gateway died (exit code {res.gateway_exit})")
        errors = sum(r.errors for r in res.runs)
        if failed or errors or res.gateway_exit not in (0, None):
            res.gateway_stderr_tail = gateway.child.stderr_tail(40)
