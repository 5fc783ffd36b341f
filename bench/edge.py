"""Edge section: the cost of JWT authentication and rate limiting, on one gateway.

Two parts (see bench/README.md):

* **micro**: `edge_micro` in-process, before any load: JWT verifications per second
  (repeated token, fresh HS256/RS256/ES256 tokens) and rate-limit checks per second
  (memory store, Redis store).
* **load**: one gateway, one nginx backend, six routes to the same backend path:
  `/plain/{id}` (no auth, no limit), `/secure/{id}` (`auth_required` + a memory token
  bucket of 1e6/s that never refuses), `/jwt/{id}` and `/limited/{id}` (each half of
  that alone, to apportion the cost), `/secure-redis/{id}` (JWT + the limit in
  Redis, one script call per request) and `/secure-redis-batched/{id}` (the same with
  ``sync: "batched"``: leases, about one call per 50 requests). wrk -t1 -c50 with a
  fixed valid HS256 bearer token on every request, in rounds that alternate the route
  order (first round in `ROUTES` order, the next reversed), so drift over the run
  affects each route alike.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Sequence
from pathlib import Path

import edge_micro
from procs import BenchError, http_request, log, probe, process_cpu_s, system_busy_s, tail
from report import EDGE_LABELS, EdgeResults, EdgeRun
from targets import BACKEND_PATH, Backend, Gateway, RedisServer, redis_server_path
from wrk import WrkResult, run_wrk

CONNECTIONS = 50
ROUNDS = 3
ROUNDS_QUICK = 1
_INTERNAL = "/users/{id}"
_ID = "123"

#: route name -> path template, in the order of the first round
ROUTES: dict[str, str] = {
    "plain": "/plain/{id}",
    "secure": "/secure/{id}",
    "jwt_only": "/jwt/{id}",
    "limit_only": "/limited/{id}",
    "secure_redis": "/secure-redis/{id}",
    "secure_redis_batched": "/secure-redis-batched/{id}",
}
#: Routes that require the bearer token.
AUTH_ROUTES = frozenset({"secure", "jwt_only", "secure_redis", "secure_redis_batched"})
#: Routes with a rate limit (their answers carry RateLimit fields).
LIMITED_ROUTES = frozenset({"secure", "limit_only", "secure_redis", "secure_redis_batched"})
#: Routes that need Redis (left out without redis-server).
REDIS_ROUTES = frozenset({"secure_redis", "secure_redis_batched"})
# The report names routes by this table; the batched row is this section's own.
EDGE_LABELS.setdefault("secure_redis_batched", "JWT + rate limit (Redis, batched)")


def route_path(route: str) -> str:
    return ROUTES[route].replace("{id}", _ID)


def _never_refusing_limit(
    backend: str, redis_url: str | None = None, *, batched: bool = False
) -> dict[str, object]:
    limit: dict[str, object] = {
        "algorithm": "token_bucket",
        "requests_per_second": edge_micro.NEVER_REFUSE_RPS,
        "burst_size": edge_micro.NEVER_REFUSE_BURST,
        "backend": backend,
    }
    if redis_url is not None:
        limit["redis_url"] = redis_url
        limit["key_prefix"] = "kairos-bench-gw:"
    if batched:
        limit["sync"] = "batched"  # batch_size 100, sync_interval_ms 1000: the defaults
    return limit


def edge_config(backend_port: int, redis_url: str | None) -> dict[str, object]:
    """`jwt_secret` (HS256) at the top level, no top-level rate limit; one route per
    entry of `ROUTES` (secure-redis only with ``redis_url``), all to `/users/{id}`."""
    backend = {"host": "http://127.0.0.1", "port": backend_port}
    routers: list[dict[str, object]] = []
    for route, external in ROUTES.items():
        if route in REDIS_ROUTES and redis_url is None:
            continue
        router: dict[str, object] = {
            "external_path": external,
            "internal_path": _INTERNAL,
            "methods": ["GET"],
            "backends": [backend],
        }
        if route in AUTH_ROUTES:
            router["auth_required"] = True
        if route in REDIS_ROUTES:
            batched = route == "secure_redis_batched"
            router["rate_limit"] = _never_refusing_limit("redis", redis_url, batched=batched)
        elif route in LIMITED_ROUTES:
            router["rate_limit"] = _never_refusing_limit("memory")
        routers.append(router)
    return {"version": 1, "jwt_secret": edge_micro.HS256_SECRET, "routers": routers}


def _metric_total(text: str, name: str) -> int | None:
    """Sum of every sample of counter `name` (`name_total{...} N` lines) in `text`;
    None when the family is not exposed at all (so a renamed metric is not read as 0)."""
    if not re.search(rf"^# TYPE {re.escape(name)}(?:_total)? counter", text, re.M):
        return None
    total = 0.0
    for value in re.findall(rf"^{re.escape(name)}_total(?:\{{[^}}]*\}})?\s+(\S+)", text, re.M):
        total += float(value)
    return int(total)


def _check_routes(gateway: Gateway, routes: Sequence[str], auth: dict[str, str]) -> None:
    """Each route answers 200 with the token; each enforces what it should and no more:
    401 without a token exactly on the auth routes, RateLimit fields exactly on the
    limited ones."""
    for route in routes:
        path = route_path(route)
        status, _, body = http_request(gateway.port, path)
        expected = 401 if route in AUTH_ROUTES else 200
        if status != expected:
            raise BenchError(
                f"GET {path} without a token answered {status}, expected {expected}: {body!r}"
            )
        fields = probe(gateway.url_for(path), auth)
        limited = "ratelimit" in fields and "ratelimit-policy" in fields
        if limited != (route in LIMITED_ROUTES):
            raise BenchError(
                f"GET {path}: RateLimit fields {'present' if limited else 'missing'}, "
                f"expected {'them' if route in LIMITED_ROUTES else 'none'}"
            )


def bench_edge(
    res: EdgeResults,
    workdir: Path,
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
    prefer_nginx: bool,
) -> None:
    """Fill `res` step by step (a failure leaves the finished rows); stops every process."""
    redis: RedisServer | None = None
    backend: Backend | None = None
    try:
        if redis_server_path() is not None:
            redis = RedisServer(workdir)
            res.redis = f"redis-server (--save '' --appendonly no) on 127.0.0.1:{redis.port}"
            log(f"edge: {res.redis}, pid {redis.child.pid}")
        else:
            res.notes.append("redis-server not installed: no Redis rows")
        log("edge: JWT and rate-limit micro-benchmarks (in-process, before any load)")
        res.micro = edge_micro.bench(
            quick=quick,
            redis_url=redis.url if redis else None,
            progress=lambda message: log(f"  {message}"),
        )
        for m in res.micro:
            log(
                f"  {m.label}: {m.ops_per_s:,.0f}/s"
                + (f"  failures {m.failures}" if m.failures else "")
            )
        if redis is not None:
            redis.flush()
        backend = Backend(workdir, prefer_nginx=prefer_nginx, name="edge-backend")
        kind = "nginx (worker_processes 1, return 200)" if backend.kind == "nginx" else "Python"
        res.backend = f"{kind} on 127.0.0.1:{backend.port}"
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        _run_gateway(res, workdir, backend, redis, duration_s, warmup_s, quick=quick)
    finally:
        if backend is not None:
            backend.stop()
        if redis is not None:
            redis.stop()


def _run_gateway(
    res: EdgeResults,
    workdir: Path,
    backend: Backend,
    redis: RedisServer | None,
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
) -> None:
    config = edge_config(backend.port, redis.url if redis else None)
    try:
        gateway = Gateway(workdir, config, name="gateway-edge")
    except BenchError:
        res.gateway_stderr_tail = tail(workdir / "gateway-edge.stderr", 40)
        raise
    log(f"edge gateway pid {gateway.pid} on port {gateway.port} ({gateway.routes} routes)")
    token = edge_micro.hs256_token()
    auth = {"Authorization": f"Bearer {token}"}
    header = [f"Authorization: Bearer {token}"]
    res.token_bytes = len(token)
    routes = [r for r in ROUTES if r not in REDIS_ROUTES or redis is not None]
    failed = True
    try:
        _check_routes(gateway, routes, auth)
        for route in routes:  # the plain route gets the header too: same request bytes
            url = gateway.url_for(route_path(route))
            log(f"edge {route}: warm-up {warmup_s}s  {url}")
            res.warmups[route] = run_wrk(url, CONNECTIONS, warmup_s, header)
        rounds = ROUNDS_QUICK if quick else ROUNDS
        ours = [gateway.pid, backend.child.pid] + ([redis.child.pid] if redis else [])
        for round_no in range(1, rounds + 1):
            order = routes if round_no % 2 else list(reversed(routes))
            for route in order:
                _measure(res, gateway, redis, ours, route, round_no, duration_s, header)
        failed = False
        _batched_notes(res)
    finally:
        alive = gateway.child.alive()
        if alive:
            _read_metrics(res, gateway)
        res.gateway_exit = gateway.stop()
        if not alive:
            res.notes.append(f"the edge gateway died (exit code {res.gateway_exit})")
        errors = sum(r.run.errors for r in res.runs) + sum(w.errors for w in res.warmups.values())
        if failed or errors or res.gateway_exit not in (0, None):
            res.gateway_stderr_tail = gateway.child.stderr_tail(40)


def _measure(
    res: EdgeResults,
    gateway: Gateway,
    redis: RedisServer | None,
    ours: Sequence[int],
    route: str,
    round_no: int,
    duration_s: int,
    header: Sequence[str],
) -> None:
    url = gateway.url_for(route_path(route))
    log(f"edge {route}: round {round_no}, {CONNECTIONS} connections, {duration_s}s")
    counting = redis is not None and route in REDIS_ROUTES
    before = redis.evalsha_calls() if counting and redis else 0
    cpu_before = _cpu_sample(ours)
    run: WrkResult = run_wrk(url, CONNECTIONS, duration_s, header)
    cpu_after = _cpu_sample(ours)
    calls = redis.evalsha_calls() - before if counting and redis is not None else None
    other = None
    if cpu_before is not None and cpu_after is not None and run.duration_s > 0:
        busy = cpu_after[0] - cpu_before[0]
        mine = cpu_after[1] - cpu_before[1]
        other = max(0.0, busy - mine) / run.duration_s
    res.runs.append(EdgeRun(route, route_path(route), round_no, run, calls, other))
    extra = f"  redis EVALSHA calls {calls:,}" if calls is not None else ""
    extra += f"  other CPU {other:.2f} cores" if other is not None else ""
    log(
        f"  {run.rps:,.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms  "
        f"errors {run.errors}{extra}"
    )
    if not gateway.child.alive():
        raise BenchError(
            f"edge gateway exited during {route} (code {gateway.child.proc.returncode})"
        )


def _batched_notes(res: EdgeResults) -> None:
    """The batched Redis row against the memory and the exact Redis rows (medians), and
    its script calls per request: the report's ratios cover the fixed routes only."""
    batched = res.median_rps("secure_redis_batched")
    if batched is None:
        return
    for route in ("secure", "secure_redis"):
        other = res.median_rps(route)
        if other:
            res.notes.append(
                f"{EDGE_LABELS['secure_redis_batched']} / {EDGE_LABELS[route]} @50: "
                f"{batched / other:.3f}x (medians)"
            )
    runs = [r for r in res.route_runs("secure_redis_batched") if r.redis_calls is not None]
    requests = sum(r.run.requests for r in runs)
    if requests:
        calls = sum(r.redis_calls or 0 for r in runs)
        res.notes.append(
            f"Redis EVALSHA calls per request, batched runs: {calls / requests:.4f} "
            f"({calls:,} / {requests:,} completed by wrk)"
        )


def _cpu_sample(pids: Sequence[int]) -> tuple[float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds of the benchmark's own
    processes: the given children, finished children such as wrk, and this process)."""
    busy = system_busy_s()
    if busy is None:
        return None
    mine = 0.0
    for pid in pids:
        cpu = process_cpu_s(pid)
        if cpu is None:
            return None
        mine += cpu
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        mine += usage.ru_utime + usage.ru_stime
    return busy, mine


def _read_metrics(res: EdgeResults, gateway: Gateway) -> None:
    try:
        status, _, body = http_request(gateway.port, "/metrics", timeout_s=5.0)
    except BenchError as exc:
        res.notes.append(f"could not read the gateway's /metrics: {exc}")
        return
    if status != 200:
        res.notes.append(f"the gateway's /metrics answered {status}")
        return
    text = body.decode(errors="replace")
    res.rate_limited = _metric_total(text, "kairos_rate_limited")
    res.store_errors = _metric_total(text, "kairos_rate_limit_store_errors")
    for name, value in (
        ("kairos_rate_limited", res.rate_limited),
        ("kairos_rate_limit_store_errors", res.store_errors),
    ):
        if value is None:
            res.notes.append(f"the gateway's /metrics has no {name} counter")
