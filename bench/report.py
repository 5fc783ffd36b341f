"""Results model, the printed tables (core, resilience, edge, workers), ratios and the PASS/MISS
targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from edge_micro import MIN_CACHED_JWT_PER_S, MicroResult
from route_match import MatchTiming, dynamic_ratio
from wrk import WrkResult

# Targets (see README.md).
MIN_THROUGHPUT_VS_NGINX = 0.10
MAX_ADDED_P50_MS = 0.6
MAX_RSS_MB = 60.0
MAX_ACCEPT_RATIO = 0.01
MAX_ROUTE_RATIO = 1.5
MIN_STRATEGY_VS_SINGLE = 0.90
MIN_SECURE_VS_PLAIN = 0.85  # JWT + rate limit at most 15 % below plain proxying
MIN_TWO_WORKERS_VS_ONE = 1.5  # 2 worker processes vs 1 under the same load


@dataclass(slots=True)
class TargetResult:
    label: str
    role: str  # "backend" | "proxy" | "gateway"
    runs: dict[int, WrkResult] = field(default_factory=dict)  # by connection count
    warmup: WrkResult | None = None
    rss_peak_mb: float | None = None
    rss_samples: int = 0

    @property
    def errors(self) -> int:
        warmup = self.warmup.errors if self.warmup else 0
        return warmup + sum(r.errors for r in self.runs.values())

    @property
    def requests(self) -> int:
        """Requests wrk completed, warm-up included."""
        warmup = self.warmup.requests if self.warmup else 0
        return warmup + sum(r.requests for r in self.runs.values())


@dataclass(slots=True)
class Reuse:
    """Backend-side view of the gateway runs (warm-up and both measured runs)."""

    accepts: int
    requests: int
    client_requests: int  # what wrk completed against the gateway

    @property
    def ratio(self) -> float:
        return self.accepts / self.requests if self.requests else float("inf")


@dataclass(frozen=True, slots=True)
class BackendShare:
    """Requests one backend counted during one measured run (its own stats query excluded)."""

    backend: str
    requests: int


@dataclass(slots=True)
class LbRun:
    """One measured wrk run against one route of the resilience gateway."""

    section: str  # "strategies" (3 fast backends) | "slow" (2 fast + 1 slow)
    route: str  # "single" or a load_balancing_strategy
    path: str
    run: WrkResult
    shares: list[BackendShare]
    warmup: WrkResult | None = None

    @property
    def connections(self) -> int:
        return self.run.connections

    @property
    def errors(self) -> int:
        """Errors of the measured run and of its warm-up (if it had one)."""
        return self.run.errors + (self.warmup.errors if self.warmup else 0)

    @property
    def mean_ms(self) -> float | None:
        """Mean latency implied by Little's law for a closed loop: connections / req/s.

        A cross-check on wrk's own latency figures, which are biased when latencies
        are bimodal (see README.md)."""
        return 1000.0 * self.connections / self.run.rps if self.run.rps > 0 else None

    def share(self, backend: str) -> float | None:
        total = sum(s.requests for s in self.shares)
        found = next((s for s in self.shares if s.backend == backend), None)
        return found.requests / total if found is not None and total > 0 else None

    def to_dict(self) -> dict[str, object]:
        total = sum(s.requests for s in self.shares)
        return {
            "section": self.section,
            "route": self.route,
            "path": self.path,
            "connections": self.connections,
            "run": self.run.to_dict(),
            "warmup": self.warmup.to_dict() if self.warmup else None,
            "mean_ms_littles_law": self.mean_ms,
            "backend_requests": {s.backend: s.requests for s in self.shares},
            "backend_share": {
                s.backend: (s.requests / total if total else None) for s in self.shares
            },
        }


@dataclass(slots=True)
class ResilienceResults:
    """The load-balancing section: one gateway, one route per strategy (see README.md)."""

    backends: dict[str, str] = field(default_factory=dict)  # name -> description
    weights: list[int] = field(default_factory=list)  # the `weighted` route, fast1..fast3
    slow_delay_ms: float = 0.0
    runs: list[LbRun] = field(default_factory=list)
    gateway_routes: int = 0
    gateway_exit: int | None = None
    gateway_stderr_tail: str | None = None
    notes: list[str] = field(default_factory=list)

    def find(self, section: str, route: str, conns: int) -> LbRun | None:
        return next(
            (
                r
                for r in self.runs
                if r.section == section and r.route == route and r.connections == conns
            ),
            None,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "backends": self.backends,
            "weights": self.weights,
            "slow_delay_ms": self.slow_delay_ms,
            "gateway_routes": self.gateway_routes,
            "gateway_exit": self.gateway_exit,
            "gateway_stderr_tail": self.gateway_stderr_tail,
            "notes": self.notes,
            "runs": [r.to_dict() for r in self.runs],
            "ratios": dict(resilience_ratios(self)),
            "checks": [
                {"name": c.name, "value": c.value, "status": c.status}
                for c in resilience_checks(self)
            ],
        }


@dataclass(frozen=True, slots=True)
class EdgeRun:
    """One measured wrk run against one route of the edge gateway."""

    route: str  # "plain" | "secure" | "secure_redis"
    path: str
    round: int
    run: WrkResult
    redis_calls: int | None = None  # EVALSHA calls Redis counted during the run
    #: CPU used by processes other than the benchmark's during the run, in cores
    #: (busy time in /proc/stat minus ours, over the run's duration): contention.
    other_cpu: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "route": self.route,
            "path": self.path,
            "round": self.round,
            "run": self.run.to_dict(),
            "redis_evalsha_calls": self.redis_calls,
            "other_cpu_cores": self.other_cpu,
        }


#: How the edge table names each route.
EDGE_LABELS = {
    "plain": "plain (no auth, no limit)",
    "secure": "JWT + rate limit (memory)",
    "jwt_only": "JWT only",
    "limit_only": "rate limit only (memory)",
    "secure_redis": "JWT + rate limit (Redis)",
}


@dataclass(slots=True)
class EdgeResults:
    """The edge-security section: micro-benchmarks and one gateway (see README.md)."""

    micro: list[MicroResult] = field(default_factory=list)
    backend: str = ""
    redis: str | None = None
    token_bytes: int = 0
    warmups: dict[str, WrkResult] = field(default_factory=dict)
    runs: list[EdgeRun] = field(default_factory=list)
    rate_limited: int | None = None  # kairos_rate_limited_total after the runs
    store_errors: int | None = None  # kairos_rate_limit_store_errors_total after the runs
    gateway_exit: int | None = None
    gateway_stderr_tail: str | None = None
    notes: list[str] = field(default_factory=list)

    def route_runs(self, route: str) -> list[EdgeRun]:
        return [r for r in self.runs if r.route == route]

    def median_rps(self, route: str) -> float | None:
        """The route's req/s over its rounds: the median, so one round disturbed by
        another process on the machine does not decide the comparison."""
        runs = self.route_runs(route)
        return statistics.median(r.run.rps for r in runs) if runs else None

    def errors(self) -> int:
        return sum(r.run.errors for r in self.runs) + sum(w.errors for w in self.warmups.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "redis": self.redis,
            "token_bytes": self.token_bytes,
            "micro": [m.to_dict() for m in self.micro],
            "warmups": {k: v.to_dict() for k, v in self.warmups.items()},
            "runs": [r.to_dict() for r in self.runs],
            "median_rps": {route: self.median_rps(route) for route in EDGE_LABELS},
            "rate_limited": self.rate_limited,
            "store_errors": self.store_errors,
            "gateway_exit": self.gateway_exit,
            "gateway_stderr_tail": self.gateway_stderr_tail,
            "notes": self.notes,
            "ratios": dict(edge_ratios(self)),
            "checks": [
                {"name": c.name, "value": c.value, "status": c.status} for c in edge_checks(self)
            ],
        }


@dataclass(frozen=True, slots=True)
class WorkersRun:
    """One measured wrk run against the gateway started with `--workers N`."""

    workers: int
    round: int
    run: WrkResult
    #: Peak of the summed VmRSS of the gateway's processes (supervisor + workers).
    rss_peak_mb: float | None = None
    #: CPU used by the gateway's processes during the run, in cores.
    gateway_cores: float | None = None
    #: The same per worker process (one entry with a single process).
    worker_cores: tuple[float, ...] = ()
    #: CPU used by the whole machine during the run, in cores (all processes).
    busy_cores: float | None = None
    #: CPU used by processes outside the benchmark during the run, in cores: contention.
    other_cores: float | None = None

    @property
    def connections(self) -> int:
        return self.run.connections

    def to_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "round": self.round,
            "connections": self.connections,
            "run": self.run.to_dict(),
            "rss_peak_mb": self.rss_peak_mb,
            "gateway_cores": self.gateway_cores,
            "worker_cores": list(self.worker_cores),
            "busy_cores": self.busy_cores,
            "other_cores": self.other_cores,
        }


@dataclass(slots=True)
class WorkersGateway:
    """One gateway of the workers section and what was counted around its runs."""

    workers: int
    pid: int  # the supervisor (or the only process with 1 worker)
    worker_pids: list[int] = field(default_factory=list)  # empty with 1 worker
    warmup: WrkResult | None = None
    probes: int = 0  # single requests on the route before the load (not counted by wrk)
    #: kairos_requests_total for the benchmark route, one value per /metrics scrape
    #: (each on a fresh connection, after the runs); None: the scrape failed.
    scrapes: list[int | None] = field(default_factory=list)
    backend_requests: int | None = None  # counted by the backend (its own queries excluded)
    backend_accepts: int | None = None
    access_log_lines: int | None = None  # lines for the benchmark route
    access_log_bad: int = 0  # lines that are not one JSON object each
    rss_idle_mb: float | None = None  # summed VmRSS after the runs
    pss_idle_mb: float | None = None  # summed PSS after the runs (shared pages counted once)
    processes: int = 0  # how many processes those sums cover
    exit_code: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers,
            "pid": self.pid,
            "worker_pids": self.worker_pids,
            "warmup": self.warmup.to_dict() if self.warmup else None,
            "probes": self.probes,
            "metrics_scrapes": self.scrapes,
            "backend_requests": self.backend_requests,
            "backend_accepts": self.backend_accepts,
            "access_log_route_lines": self.access_log_lines,
            "access_log_bad_lines": self.access_log_bad,
            "rss_idle_mb": self.rss_idle_mb,
            "pss_idle_mb": self.pss_idle_mb,
            "processes": self.processes,
            "exit_code": self.exit_code,
        }


@dataclass(slots=True)
class WorkersResults:
    """The workers section: the core gateway with 1 and with 2 worker processes."""

    backend: str = ""
    route: str = ""
    gateways: dict[int, WorkersGateway] = field(default_factory=dict)  # by worker count
    runs: list[WorkersRun] = field(default_factory=list)
    gateway_stderr_tail: str | None = None
    notes: list[str] = field(default_factory=list)

    def select(self, workers: int, conns: int) -> list[WorkersRun]:
        return [r for r in self.runs if r.workers == workers and r.connections == conns]

    def connection_counts(self) -> list[int]:
        return sorted({r.connections for r in self.runs})

    def median_rps(self, workers: int, conns: int) -> float | None:
        runs = self.select(workers, conns)
        return statistics.median(r.run.rps for r in runs) if runs else None

    def completed(self, workers: int) -> int:
        """Requests wrk completed against that gateway, warm-up included."""
        gw = self.gateways.get(workers)
        warmup = gw.warmup.requests if gw is not None and gw.warmup else 0
        return warmup + sum(r.run.requests for r in self.runs if r.workers == workers)

    def errors(self) -> int:
        warmups = sum(g.warmup.errors for g in self.gateways.values() if g.warmup)
        return warmups + sum(r.run.errors for r in self.runs)

    def to_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "route": self.route,
            "gateways": {str(n): g.to_dict() for n, g in self.gateways.items()},
            "completed_by_wrk": {str(n): self.completed(n) for n in self.gateways},
            "runs": [r.to_dict() for r in self.runs],
            "median_rps": {
                f"{n}w@{c}": self.median_rps(n, c)
                for n in self.gateways
                for c in self.connection_counts()
            },
            "gateway_stderr_tail": self.gateway_stderr_tail,
            "notes": self.notes,
            "ratios": dict(workers_ratios(self)),
            "checks": [
                {"name": c.name, "value": c.value, "status": c.status} for c in workers_checks(self)
            ],
        }


@dataclass(slots=True)
class Results:
    machine: dict[str, str]
    backend_kind: str
    duration_s: int
    targets: list[TargetResult]
    routes: list[MatchTiming]
    reuse: Reuse | None = None
    access_log_lines: int | None = None
    gateway_exit: int | None = None
    gateway_stderr_tail: str | None = None
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=lambda: ["core", "resilience", "edge", "workers"])
    resilience: ResilienceResults | None = None
    edge: EdgeResults | None = None
    workers: WorkersResults | None = None

    def by_role(self, role: str) -> TargetResult | None:
        return next((t for t in self.targets if t.role == role), None)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: str
    status: str  # PASS | MISS | n/a


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Results) -> str:
    head = ("target", "conns", "req/s", "p50 ms", "p99 ms", "errors", "RSS MB", "ns/match")
    rows: list[tuple[str, ...]] = []
    for target in results.targets:
        for conns, run in sorted(target.runs.items(), reverse=True):
            rss = target.rss_peak_mb if conns == max(target.runs) else None
            rows.append(
                (
                    target.label,
                    str(conns),
                    f"{run.rps:,.0f}",
                    f"{run.p50_ms:.3f}",
                    f"{run.p99_ms:.3f}",
                    str(run.errors),
                    _fmt(rss, ".1f"),
                    "-",
                )
            )
    split = len(rows)
    for timing in results.routes:
        rows.append((timing.label, "-", "-", "-", "-", "-", "-", f"{timing.ns_per_match:,.0f}"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    rule = "-" * len(line(head))
    out = [line(head), rule, *(line(r) for r in rows[:split]), rule]
    out += [line(r) for r in rows[split:]]
    return "\n".join(out)


def _p50(target: TargetResult | None, conns: int) -> float | None:
    run = target.runs.get(conns) if target else None
    return run.p50_ms if run else None


def _rps(target: TargetResult | None, conns: int) -> float | None:
    run = target.runs.get(conns) if target else None
    return run.rps if run else None


def ratios(results: Results) -> list[tuple[str, str]]:
    gw, proxy, direct = (results.by_role(r) for r in ("gateway", "proxy", "backend"))
    out: list[tuple[str, str]] = []
    gw50, proxy50, direct50 = _rps(gw, 50), _rps(proxy, 50), _rps(direct, 50)
    if gw50 is not None and proxy50:
        out.append(("throughput gateway / nginx proxy @50", f"{gw50 / proxy50:.3f}x"))
    if gw50 is not None and direct50:
        out.append(("throughput gateway / direct @50", f"{gw50 / direct50:.3f}x"))
    gw1, proxy1, direct1 = _p50(gw, 1), _p50(proxy, 1), _p50(direct, 1)
    if gw1 is not None and direct1 is not None:
        out.append(("added p50 latency gateway - direct @1", f"{gw1 - direct1:+.3f} ms"))
    if proxy1 is not None and direct1 is not None:
        out.append(("added p50 latency nginx proxy - direct @1", f"{proxy1 - direct1:+.3f} ms"))
    if results.routes:
        out.append(
            ("dynamic route match 10,000 / 10 routes", f"{dynamic_ratio(results.routes):.2f}x")
        )
    return out


def checks(results: Results) -> list[Check]:
    gw, proxy, direct = (results.by_role(r) for r in ("gateway", "proxy", "backend"))
    out: list[Check] = []

    def add(name: str, value: str, ok: bool | None) -> None:
        out.append(Check(name, value, "n/a" if ok is None else "PASS" if ok else "MISS"))

    gw50, proxy50 = _rps(gw, 50), _rps(proxy, 50)
    if gw50 is not None and proxy50:
        share = gw50 / proxy50
        add(
            f"throughput @50 >= {MIN_THROUGHPUT_VS_NGINX:.2f} x nginx proxy",
            f"{share:.3f}x",
            share >= MIN_THROUGHPUT_VS_NGINX,
        )
    else:
        missing = "no nginx" if proxy is None else "not measured"
        add(f"throughput @50 >= {MIN_THROUGHPUT_VS_NGINX:.2f} x nginx proxy", missing, None)

    gw1, direct1 = _p50(gw, 1), _p50(direct, 1)
    if gw1 is not None and direct1 is not None:
        added = gw1 - direct1
        add(f"added p50 @1 <= {MAX_ADDED_P50_MS} ms", f"{added:.3f} ms", added <= MAX_ADDED_P50_MS)
    else:
        add(f"added p50 @1 <= {MAX_ADDED_P50_MS} ms", "not measured", None)

    rss = gw.rss_peak_mb if gw else None
    add(
        f"RSS under load <= {MAX_RSS_MB:.0f} MB",
        "not measured" if rss is None else f"{rss:.1f} MB",
        None if rss is None else rss <= MAX_RSS_MB,
    )

    if gw is not None:
        add("zero errors (gateway, warm-up included)", str(gw.errors), gw.errors == 0)
    else:
        add("zero errors (gateway, warm-up included)", "not measured", None)

    reuse = results.reuse
    if reuse is not None:
        add(
            f"upstream reuse: accepts < {MAX_ACCEPT_RATIO:.0%} of requests",
            f"{reuse.accepts:,} / {reuse.requests:,} = {reuse.ratio:.4%}",
            reuse.ratio < MAX_ACCEPT_RATIO,
        )
    else:
        add(f"upstream reuse: accepts < {MAX_ACCEPT_RATIO:.0%} of requests", "not measured", None)

    if results.routes:
        ratio = dynamic_ratio(results.routes)
        add(
            f"dynamic match 10,000 routes <= {MAX_ROUTE_RATIO}x 10 routes",
            f"{ratio:.2f}x",
            ratio <= MAX_ROUTE_RATIO,
        )
    return out


def _grid(head: tuple[str, ...], blocks: list[list[tuple[str, ...]]]) -> list[str]:
    """Left-aligned first column, right-aligned others; a rule between blocks."""
    rows = [r for block in blocks for r in block]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    rule = "-" * len(line(head))
    out = [line(head)]
    for block in blocks:
        out += [rule, *(line(r) for r in block)]
    return out


def _shares_cell(run: LbRun) -> str:
    total = sum(s.requests for s in run.shares)
    if total <= 0:
        return "-"
    return "/".join(f"{100 * s.requests / total:.0f}" for s in run.shares)


def resilience_table(res: ResilienceResults) -> str:
    head = (
        "route",
        "conns",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms*",
        "errors",
        "vs single",
        "",
    )
    blocks: list[list[tuple[str, ...]]] = []
    for section in ("strategies", "slow"):
        block: list[tuple[str, ...]] = []
        for lb in (r for r in res.runs if r.section == section):
            single = res.find("strategies", "single", lb.connections)
            vs = (
                f"{lb.run.rps / single.run.rps:.3f}x"
                if section == "strategies" and single is not None and single.run.rps
                else "-"
            )
            names = "/".join(s.backend for s in lb.shares)
            if section == "strategies" and lb.route == "single":
                label = "single backend (fast1)"
            elif section == "strategies":
                label = f"3 fast: {lb.route}"
            else:
                label = f"2 fast + slow: {lb.route}"
            block.append(
                (
                    label,
                    str(lb.connections),
                    f"{lb.run.rps:,.0f}",
                    f"{lb.run.p50_ms:.3f}",
                    f"{lb.run.p90_ms:.3f}",
                    f"{lb.run.p99_ms:.3f}",
                    _fmt(lb.mean_ms, ".3f"),
                    str(lb.run.errors),
                    vs,
                    f"{_shares_cell(lb)} % ({names})",
                )
            )
        if block:
            blocks.append(block)
    if not blocks:
        return "  (no resilience runs completed)"
    head = (*head[:-1], "share of requests per backend")
    legend = "* mean ms = connections / req/s (Little's law), not from wrk's latency histogram"
    return "\n".join([*_grid(head, blocks), legend])


def resilience_ratios(res: ResilienceResults) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    conns = sorted({r.connections for r in res.runs if r.section == "slow"}, reverse=True)
    for c in conns:
        rr, la = res.find("slow", "round_robin", c), res.find("slow", "latency_aware", c)
        if rr is None or la is None:
            continue
        if rr.run.p99_ms:
            out.append(
                (
                    f"p99 latency_aware / round_robin @{c} (slow backend)",
                    f"{la.run.p99_ms / rr.run.p99_ms:.3f}x",
                )
            )
        if rr.run.p50_ms:
            out.append(
                (f"p50 latency_aware / round_robin @{c}", f"{la.run.p50_ms / rr.run.p50_ms:.3f}x")
            )
        if rr.run.rps:
            out.append(
                (f"req/s latency_aware / round_robin @{c}", f"{la.run.rps / rr.run.rps:.3f}x")
            )
        for lb in (rr, la):
            share = lb.share("slow")
            if share is not None:
                out.append((f"slow backend's share, {lb.route} @{c}", f"{share:.2%}"))
    return out


def resilience_checks(res: ResilienceResults) -> list[Check]:
    out: list[Check] = []
    strategies = [r for r in res.runs if r.section == "strategies" and r.route != "single"]
    for lb in strategies:
        single = res.find("strategies", "single", lb.connections)
        name = f"{lb.route} @{lb.connections} >= {MIN_STRATEGY_VS_SINGLE:.2f} x single backend"
        if single is None or not single.run.rps:
            out.append(Check(name, "not measured", "n/a"))
            continue
        share = lb.run.rps / single.run.rps
        status = "PASS" if share >= MIN_STRATEGY_VS_SINGLE else "MISS"
        out.append(Check(name, f"{share:.3f}x", status))
    if res.runs:
        errors = sum(r.errors for r in res.runs)
        name = "zero errors (resilience runs, warm-ups included)"
        out.append(Check(name, str(errors), "PASS" if errors == 0 else "MISS"))
    return out


def _kv(pairs: list[tuple[str, str]]) -> list[str]:
    if not pairs:
        return []
    width = max(len(k) for k, _ in pairs)
    return [f"  {k:<{width}}  {v}" for k, v in pairs]


def _checks_lines(found: list[Check]) -> list[str]:
    if not found:
        return ["  (nothing measured)"]
    width = max(len(c.name) for c in found)
    vwidth = max(len(c.value) for c in found)
    return [f"  {c.status:<4}  {c.name:<{width}}  {c.value:>{vwidth}}" for c in found]


def render_resilience(res: ResilienceResults, duration_s: int) -> list[str]:
    slow_conns = sorted({r.connections for r in res.runs if r.section == "slow"}, reverse=True)
    conns_text = " and ".join(f"-c{c}" for c in slow_conns) or "-c50"
    out = [
        "",
        "Resilience: load balancing (one gateway, one route per strategy)",
        f"Load: wrk -t1 -c50 per route, {duration_s}s after a warm-up; slow-backend routes "
        f"{conns_text}. Baseline: the single-backend route on the same gateway.",
    ]
    out += [f"  {name:<6} {desc}" for name, desc in res.backends.items()]
    if res.weights:
        out.append(
            f"  weighted route: weights {'/'.join(map(str, res.weights))} (fast1/fast2/fast3)"
        )
    out += ["", resilience_table(res), "", "Resilience ratios"]
    out += _kv(resilience_ratios(res)) or ["  (not measured)"]
    out += ["", "Resilience targets", *_checks_lines(resilience_checks(res))]
    if res.notes:
        out += ["", "Resilience notes", *(f"  - {n}" for n in res.notes)]
    if res.gateway_stderr_tail:
        out += ["", "Resilience gateway stderr (tail)", res.gateway_stderr_tail]
    return out


def edge_table(res: EdgeResults) -> str:
    head = (
        "route",
        "round",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "vs plain",
        "other CPU",
    )
    block: list[tuple[str, ...]] = []
    for run in sorted(res.runs, key=lambda r: (list(EDGE_LABELS).index(r.route), r.round)):
        plain = next((p for p in res.route_runs("plain") if p.round == run.round), None)
        vs = (
            f"{run.run.rps / plain.run.rps:.3f}x"
            if run.route != "plain" and plain is not None and plain.run.rps
            else "-"
        )
        block.append(
            (
                EDGE_LABELS.get(run.route, run.route),
                str(run.round),
                f"{run.run.rps:,.0f}",
                f"{run.run.p50_ms:.3f}",
                f"{run.run.p90_ms:.3f}",
                f"{run.run.p99_ms:.3f}",
                str(run.run.errors),
                vs,
                _fmt(run.other_cpu, ".2f"),
            )
        )
    if not block:
        return "  (no edge load runs completed)"
    medians: list[tuple[str, ...]] = []
    plain_median = res.median_rps("plain")
    for route, label in EDGE_LABELS.items():
        median = res.median_rps(route)
        if median is None:
            continue
        vs = f"{median / plain_median:.3f}x" if route != "plain" and plain_median else "-"
        rounds = len(res.route_runs(route))
        medians.append((label, f"median/{rounds}", f"{median:,.0f}", "", "", "", "", vs, ""))
    legend = (
        "vs plain: against the plain route's run of the same round (median rows: medians); "
        "other CPU: cores used by processes outside the benchmark during the run"
    )
    return "\n".join([*_grid(head, [block, medians]), legend])


def micro_table(micro: list[MicroResult]) -> str:
    if not micro:
        return "  (no micro-benchmarks completed)"
    head = ("micro-benchmark", "ops/s", "us/op", "failures")
    rows: list[tuple[str, ...]] = [
        (
            m.label,
            f"{m.ops_per_s:,.0f}",
            f"{m.us_per_op:.2f}",
            f"{m.failures:,} of {m.ops_total:,}" if m.failures else "0",
        )
        for m in micro
    ]
    return "\n".join(_grid(head, [rows]))


def edge_ratios(res: EdgeResults) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    plain = res.median_rps("plain")
    for route in ("secure", "jwt_only", "limit_only", "secure_redis"):
        median = res.median_rps(route)
        if median is None or not plain:
            continue
        rounds = len(res.route_runs(route))
        change = median / plain - 1
        out.append(
            (
                f"throughput {EDGE_LABELS[route]} / plain @50 (medians of {rounds})",
                f"{median / plain:.3f}x ({abs(change):.1%} {'lower' if change < 0 else 'higher'})",
            )
        )
    p50 = {
        route: statistics.median(r.run.p50_ms for r in runs)
        for route in EDGE_LABELS
        if (runs := res.route_runs(route))
    }
    if "plain" in p50:
        for route in ("secure", "jwt_only", "limit_only", "secure_redis"):
            if route in p50:
                out.append(
                    (
                        f"added p50 {EDGE_LABELS[route]} - plain @50 (medians)",
                        f"{p50[route] - p50['plain']:+.3f} ms",
                    )
                )
    redis_runs = [r for r in res.route_runs("secure_redis") if r.redis_calls is not None]
    requests = sum(r.run.requests for r in redis_runs)
    calls = sum(r.redis_calls or 0 for r in redis_runs)
    if requests:
        out.append(
            (
                "Redis EVALSHA calls per request (Redis runs)",
                f"{calls / requests:.3f} ({calls:,} / {requests:,} completed by wrk)",
            )
        )
    if res.rate_limited is not None:
        out.append(
            ("requests refused by the limit (kairos_rate_limited_total)", str(res.rate_limited))
        )
    if res.store_errors is not None:
        out.append(
            ("Redis fallbacks (kairos_rate_limit_store_errors_total)", str(res.store_errors))
        )
    return out


def edge_checks(res: EdgeResults) -> list[Check]:
    out: list[Check] = []
    name = f"JWT + rate limit (memory) @50 >= {MIN_SECURE_VS_PLAIN:.2f} x plain (medians)"
    plain, secure = res.median_rps("plain"), res.median_rps("secure")
    if plain and secure is not None:
        share = secure / plain
        out.append(Check(name, f"{share:.3f}x", "PASS" if share >= MIN_SECURE_VS_PLAIN else "MISS"))
    else:
        out.append(Check(name, "not measured", "n/a"))
    cached = next((m for m in res.micro if m.name == "jwt_cached_hs256"), None)
    name = f"repeated-token JWT verifications >= {MIN_CACHED_JWT_PER_S:,.0f}/s"
    if cached is not None:
        status = "PASS" if cached.ops_per_s >= MIN_CACHED_JWT_PER_S else "MISS"
        out.append(Check(name, f"{cached.ops_per_s:,.0f}/s", status))
    else:
        out.append(Check(name, "not measured", "n/a"))
    if res.runs:
        errors = res.errors()
        name = "zero errors (edge runs, warm-ups included)"
        out.append(Check(name, str(errors), "PASS" if errors == 0 else "MISS"))
    if res.rate_limited is not None:
        name = "no request refused by the never-refusing limit"
        out.append(Check(name, str(res.rate_limited), "PASS" if res.rate_limited == 0 else "MISS"))
    if res.store_errors is not None and res.redis is not None:
        name = "no Redis fallback during the gateway runs"
        out.append(Check(name, str(res.store_errors), "PASS" if res.store_errors == 0 else "MISS"))
    return out


def render_edge(res: EdgeResults, duration_s: int) -> list[str]:
    rounds = max((r.round for r in res.runs), default=0)
    out = [
        "",
        "Edge security: JWT verification and rate limiting",
        "In-process micro-benchmarks (best of several repeats, before any load):",
        "",
        micro_table(res.micro),
        "",
        f"Load: one gateway, wrk -t1 -c50 per route, {duration_s}s, {rounds} round(s) "
        "alternating the route order, after a warm-up; every request carries the same "
        f"valid HS256 bearer token ({res.token_bytes} chars), the plain route's too.",
        f"  backend  {res.backend or '-'}",
        f"  redis    {res.redis or 'not used'}",
        "  routes (all to the same backend path): /plain/{id} nothing; /secure/{id} "
        "auth_required + limit; /jwt/{id} auth_required; /limited/{id} limit;",
        "  /secure-redis/{id} auth_required + limit in Redis. Limit: token bucket 1e6/s, "
        "burst 1e6, key ip (never refuses).",
        "",
        edge_table(res),
        "",
        "Edge ratios",
    ]
    out += _kv(edge_ratios(res)) or ["  (not measured)"]
    out += ["", "Edge targets", *_checks_lines(edge_checks(res))]
    notes = list(res.notes)
    for m in res.micro:
        if m.failures:
            notes.append(
                f"{m.label}: {m.failures:,} of {m.ops_total:,} checks got a refusal or the "
                "store's fallback answer (Redis: no reply within redis_timeout_ms, then "
                "Redis skipped for 0.5 s), so that rate is not a Redis-backed rate"
            )
    if notes:
        out += ["", "Edge notes", *(f"  - {n}" for n in notes)]
    if res.gateway_stderr_tail:
        out += ["", "Edge gateway stderr (tail)", res.gateway_stderr_tail]
    return out


def _workers_label(workers: int) -> str:
    return f"{workers} worker{'s' if workers != 1 else ''}"


def _split_cell(cores: tuple[float, ...]) -> str:
    total = sum(cores)
    if len(cores) < 2 or total <= 0:
        return "-"
    return "/".join(f"{100 * c / total:.0f}" for c in cores)


def _fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def workers_table(res: WorkersResults) -> str:
    head = (
        "gateway",
        "conns",
        "round",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "RSS MB",
        "gw cores",
        "split %",
        "busy cores",
        "other CPU",
    )
    runs: list[tuple[str, ...]] = []
    for r in sorted(res.runs, key=lambda r: (r.connections, r.workers, r.round)):
        runs.append(
            (
                _workers_label(r.workers),
                str(r.connections),
                str(r.round),
                f"{r.run.rps:,.0f}",
                f"{r.run.p50_ms:.3f}",
                f"{r.run.p99_ms:.3f}",
                str(r.run.errors),
                _fmt(r.rss_peak_mb, ".1f"),
                _fmt(r.gateway_cores, ".2f"),
                _split_cell(r.worker_cores),
                _fmt(r.busy_cores, ".2f"),
                _fmt(r.other_cores, ".2f"),
            )
        )
    if not runs:
        return "  (no workers runs completed)"
    medians: list[tuple[str, ...]] = []
    for conns in res.connection_counts():
        for workers in sorted(res.gateways):
            sel = res.select(workers, conns)
            if not sel:
                continue
            peaks = [r.rss_peak_mb for r in sel if r.rss_peak_mb is not None]
            gw_cores = [r.gateway_cores for r in sel if r.gateway_cores is not None]
            busy = [r.busy_cores for r in sel if r.busy_cores is not None]
            other = [r.other_cores for r in sel if r.other_cores is not None]
            medians.append(
                (
                    _workers_label(workers),
                    str(conns),
                    f"median/{len(sel)}",
                    f"{statistics.median(r.run.rps for r in sel):,.0f}",
                    f"{statistics.median(r.run.p50_ms for r in sel):.3f}",
                    f"{statistics.median(r.run.p99_ms for r in sel):.3f}",
                    str(sum(r.run.errors for r in sel)),
                    _fmt(max(peaks) if peaks else None, ".1f"),
                    _fmt(statistics.median(gw_cores) if gw_cores else None, ".2f"),
                    "",
                    _fmt(statistics.median(busy) if busy else None, ".2f"),
                    _fmt(statistics.median(other) if other else None, ".2f"),
                )
            )
    legend = [
        "RSS MB: peak of VmRSS summed over the supervisor and its workers during the run "
        "(median rows: the highest);",
        "gw cores: CPU used by the gateway's processes during the run; split %: its share "
        "per worker; busy cores: the whole machine's (2.00 = both cores busy);",
        "other CPU: cores used by processes outside the benchmark during the run "
        "(contention: the run was disturbed when this is well above 0).",
    ]
    return "\n".join([*_grid(head, [runs, medians]), *legend])


def workers_ratios(res: WorkersResults) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for conns in res.connection_counts():
        one, two = res.median_rps(1, conns), res.median_rps(2, conns)
        if one and two is not None:
            per_round = []
            for r2 in res.select(2, conns):
                r1 = next((r for r in res.select(1, conns) if r.round == r2.round), None)
                if r1 is not None and r1.run.rps:
                    per_round.append(f"{r2.run.rps / r1.run.rps:.2f}")
            rounds = f" (rounds {' / '.join(per_round)})" if per_round else ""
            out.append(
                (
                    f"throughput 2 workers / 1 @{conns} (medians of {len(res.select(2, conns))})",
                    f"{two / one:.3f}x{rounds}",
                )
            )
        p50_one = [r.run.p50_ms for r in res.select(1, conns)]
        p50_two = [r.run.p50_ms for r in res.select(2, conns)]
        if p50_one and p50_two:
            a, b = statistics.median(p50_one), statistics.median(p50_two)
            if a:
                out.append((f"p50 2 workers / 1 @{conns} (medians)", f"{b / a:.3f}x"))
    peaks = {
        n: max((r.rss_peak_mb or 0.0 for r in res.runs if r.workers == n), default=0.0)
        for n in (1, 2)
    }
    if peaks[1] and peaks[2]:
        out.append(
            (
                "total RSS under load, 2 workers / 1 (peaks)",
                f"{peaks[2]:.1f} / {peaks[1]:.1f} MB = {peaks[2] / peaks[1]:.2f}x",
            )
        )
    one_gw, two_gw = res.gateways.get(1), res.gateways.get(2)
    if one_gw and two_gw and one_gw.pss_idle_mb and two_gw.pss_idle_mb:
        out.append(
            (
                "total PSS after the runs, 2 workers / 1",
                f"{two_gw.pss_idle_mb:.1f} / {one_gw.pss_idle_mb:.1f} MB = "
                f"{two_gw.pss_idle_mb / one_gw.pss_idle_mb:.2f}x",
            )
        )
    return out


def _scrapes_agree(gw: WorkersGateway) -> bool:
    return bool(gw.scrapes) and None not in gw.scrapes and len(set(gw.scrapes)) == 1


def workers_checks(res: WorkersResults) -> list[Check]:
    out: list[Check] = []
    for conns in res.connection_counts():
        name = f"throughput 2 workers @{conns} >= {MIN_TWO_WORKERS_VS_ONE} x 1 worker (medians)"
        one, two = res.median_rps(1, conns), res.median_rps(2, conns)
        if one and two is not None:
            ratio = two / one
            status = "PASS" if ratio >= MIN_TWO_WORKERS_VS_ONE else "MISS"
            out.append(Check(name, f"{ratio:.3f}x", status))
        else:
            out.append(Check(name, "not measured", "n/a"))
    if res.runs:
        errors = res.errors()
        name = "zero errors (workers runs, warm-ups included)"
        out.append(Check(name, str(errors), "PASS" if errors == 0 else "MISS"))
    gw = res.gateways.get(2)
    if gw is not None and gw.scrapes:
        name = "2 workers: every /metrics scrape = requests at backend"
        seen = sorted({_fmt_int(v) for v in gw.scrapes})
        value = f"{' / '.join(seen)} vs {_fmt_int(gw.backend_requests)}"
        ok = _scrapes_agree(gw) and gw.backend_requests == gw.scrapes[0]
        out.append(Check(name, value, "PASS" if ok else "MISS"))
        first = gw.scrapes[0]
        if first is not None:
            completed = res.completed(2) + gw.probes
            name = "2 workers: /metrics count >= completed by wrk + probes"
            ok = first >= completed
            out.append(Check(name, f"{first:,} vs {completed:,}", "PASS" if ok else "MISS"))
    if gw is not None and gw.access_log_lines is not None:
        name = "2 workers: access-log lines = requests at backend, none broken"
        value = f"{gw.access_log_lines:,} vs {_fmt_int(gw.backend_requests)}, "
        value += f"{gw.access_log_bad} broken"
        ok = gw.access_log_lines == gw.backend_requests and gw.access_log_bad == 0
        out.append(Check(name, value, "PASS" if ok else "MISS"))
    return out


def _counts_lines(res: WorkersResults) -> list[str]:
    gws = [res.gateways[n] for n in sorted(res.gateways)]
    if not gws:
        return []

    def scraped(g: WorkersGateway) -> str:
        if not g.scrapes:
            return "-"
        return _fmt_int(g.scrapes[0]) + ("" if _scrapes_agree(g) else " (scrapes differ)")

    def excess(g: WorkersGateway) -> str:
        if not g.scrapes or g.scrapes[0] is None:
            return "-"
        return f"{g.scrapes[0] - res.completed(g.workers) - g.probes:+,}"

    rows: list[tuple[str, ...]] = [
        ("", *(_workers_label(g.workers) for g in gws)),
        ("completed by wrk (warm-up included)", *(f"{res.completed(g.workers):,}" for g in gws)),
        ("probe requests (not counted by wrk)", *(str(g.probes) for g in gws)),
        ("kairos_requests_total, route (/metrics)", *(scraped(g) for g in gws)),
        ("requests at backend", *(_fmt_int(g.backend_requests) for g in gws)),
        ("connections accepted by backend", *(_fmt_int(g.backend_accepts) for g in gws)),
        ("access-log lines (route)", *(_fmt_int(g.access_log_lines) for g in gws)),
        ("metrics - (wrk + probes)", *(excess(g) for g in gws)),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = (c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        out.append("  " + "  ".join([r[0].ljust(widths[0]), *cells]))
    for g in gws:
        if g.scrapes:
            values = ", ".join(_fmt_int(v) for v in g.scrapes)
            out.append(f"  {_workers_label(g.workers)}: {len(g.scrapes)} scrapes: {values}")
    return out


def render_workers(res: WorkersResults, duration_s: int) -> list[str]:
    rounds = max((r.round for r in res.runs), default=0)
    conns = " and ".join(f"-c{c}" for c in res.connection_counts()) or "-c50"
    out = [
        "",
        "Workers: the core gateway with --workers 1 and --workers 2 (SO_REUSEPORT)",
        f"Load: wrk -t1 {conns}, {duration_s}s per run, {rounds} round(s) alternating which "
        "gateway goes first, after a warm-up; route and config as in the core section.",
        f"  backend    {res.backend or '-'}",
    ]
    for n, g in sorted(res.gateways.items()):
        if g.worker_pids:
            who = f"supervisor pid {g.pid}, workers {', '.join(map(str, g.worker_pids))}"
        else:
            who = f"one process, pid {g.pid}"
        out.append(f"  {_workers_label(n):<9}  {who}")
    out += [
        "  Nothing pinned: wrk and the nginx backend share the cores with the workers, so on "
        "2 cores the second worker gets well under a core of its own.",
        "",
        workers_table(res),
        "",
        "Workers ratios",
    ]
    out += _kv(workers_ratios(res)) or ["  (not measured)"]
    counts = _counts_lines(res)
    if counts:
        out += ["", "Request counts after the runs (/metrics scraped on fresh connections)"]
        out += counts
    memory = [
        f"  {_workers_label(g.workers)}: RSS {g.rss_idle_mb:.1f} MB, PSS {g.pss_idle_mb:.1f} MB "
        f"over {g.processes} process(es)"
        for g in (res.gateways[n] for n in sorted(res.gateways))
        if g.rss_idle_mb is not None and g.pss_idle_mb is not None
    ]
    if memory:
        out += ["", "Memory after the runs (sums over the gateway's processes)", *memory]
    out += ["", "Workers targets", *_checks_lines(workers_checks(res))]
    if res.notes:
        out += ["", "Workers notes", *(f"  - {n}" for n in res.notes)]
    if res.gateway_stderr_tail:
        out += ["", "Workers gateway stderr (tail)", res.gateway_stderr_tail]
    return out


def render_core(results: Results) -> list[str]:
    out = [
        "",
        f"Load: wrk -t1 -c50 and -t1 -c1, {results.duration_s}s each after a warm-up; "
        "nothing pinned (wrk, backend and proxy/gateway share the cores).",
        f"Backend: {results.backend_kind}. Latency = wrk --latency distribution.",
        "",
        table(results),
        "",
        "Ratios",
    ]
    out += _kv(ratios(results))
    if results.reuse is not None:
        r = results.reuse
        out += [
            "",
            "Upstream connections (backend counters across the gateway's warm-up + runs)",
            f"  accepted connections  {r.accepts:,}",
            f"  requests at backend   {r.requests:,}",
            f"  requests at gateway   {r.client_requests:,} (completed by wrk, warm-up included)",
        ]
        if results.access_log_lines is not None:
            out.append(f"  access-log lines      {results.access_log_lines:,}")
    out += ["", "Targets", *_checks_lines(checks(results))]
    if results.gateway_stderr_tail:
        out += ["", "Gateway stderr (tail)", results.gateway_stderr_tail]
    return out


def render(results: Results) -> str:
    out = ["", "Machine"]
    width = max(len(k) for k in results.machine)
    out += [f"  {k:<{width}}  {v}" for k, v in results.machine.items()]
    if "core" in results.sections:
        out += render_core(results)
    if "resilience" in results.sections and results.resilience is not None:
        out += render_resilience(results.resilience, results.duration_s)
    if "edge" in results.sections and results.edge is not None:
        out += render_edge(results.edge, results.duration_s)
    if "workers" in results.sections and results.workers is not None:
        out += render_workers(results.workers, results.duration_s)
    if results.notes:
        out += ["", "Notes", *(f"  - {n}" for n in results.notes)]
    return "\n".join(out)
