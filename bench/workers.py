"""Workers section: the core gateway run with 1 and with 2 worker processes.

Two gateways with the core section's config (`targets.gateway_config`: the dynamic
route `/api/users/{id}` among 20 decoys, access log to a file, JSON logs, metrics on),
one started with `--workers 1` (a single process) and one with `--workers 2` (a
supervisor forking two workers that share the port with SO_REUSEPORT), each in front
of its own nginx backend so the backend's counters belong to one gateway. Both stay up
for the whole section and are loaded in turn: a warm-up each, then rounds of
`wrk -t1 -c50` and `-c100` against each, alternating which gateway goes first, so slow
drift on the machine affects both alike.

Around each measured run: the summed VmRSS of the gateway's processes (the supervisor
and its children, found through /proc), the CPU they used and the machine's. After the
runs, `/metrics` is scraped several times on fresh connections (so both workers
answer some) and `kairos_requests_total` for the route is compared with what wrk
completed, with the backend's request counter and with the access-log lines.
"""

from __future__ import annotations

import json
import re
import resource
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from procs import (
    BenchError,
    child_pids,
    http_request,
    log,
    probe,
    process_cpu_s,
    pss_kib,
    rss_kib,
    system_busy_s,
)
from report import WorkersGateway, WorkersResults, WorkersRun
from targets import BACKEND_PATH, Backend, Gateway, gateway_config
from wrk import run_wrk

WORKER_COUNTS = (1, 2)
CONNECTIONS = (50, 100)
ROUNDS = 3
ROUNDS_QUICK = 1
#: The route's template, as the metrics and the access log label it.
ROUTE = "/api/users/{id}"
#: /metrics scrapes per gateway after the runs, each on a new connection.
SCRAPES = 6
#: Workers publish their metrics for the others once a second: wait longer than that
#: after the last run before scraping.
PUBLISH_WAIT_S = 2.5
RSS_SAMPLE_INTERVAL_S = 0.25


def gateway_pids(gateway: Gateway) -> list[int]:
    """The gateway's processes: the one it was started as, then its children (workers)."""
    return [gateway.pid, *child_pids(gateway.pid)]


class GroupRssSampler:
    """Samples the summed VmRSS of a set of processes on a thread; keeps the peak."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._stop = threading.Event()
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        total = sum(rss_kib(pid) or 0 for pid in self._pids)
        self.peak_kib = max(self.peak_kib, total)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> GroupRssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def route_requests(text: str, route: str) -> int | None:
    """`kairos_requests_total` summed over every sample labelled `route` (all methods and
    statuses); None when the family is missing. The label value holds braces
    (`{id}`), so a sample's label set runs to the last `}` before the value."""
    if not re.search(r"^# TYPE kairos_requests_total counter", text, re.M):
        return None
    label = f'route="{route}"'
    total = 0.0
    for labels, value in re.findall(r"^kairos_requests_total\{(.*)\}\s+(\S+)\s*$", text, re.M):
        if label in labels:
            total += float(value)
    return int(total)


def scrape(gateway: Gateway) -> int | None:
    """One `/metrics` scrape on a fresh connection: the route's request count."""
    try:
        status, _, body = http_request(gateway.port, "/metrics", timeout_s=5.0)
    except BenchError as exc:
        log(f"  /metrics scrape failed: {exc}")
        return None
    if status != 200:
        log(f"  /metrics answered {status}")
        return None
    return route_requests(body.decode(errors="replace"), ROUTE)


def access_log_counts(path: Path, route: str) -> tuple[int, int]:
    """(lines for `route`, lines that are not one JSON object each) in an access log."""
    lines = bad = 0
    try:
        with path.open("rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    bad += 1
                    continue
                if not isinstance(entry, dict):
                    bad += 1
                elif entry.get("route") == route:
                    lines += 1
    except OSError:
        return 0, 0
    return lines, bad


def bench_workers(
    res: WorkersResults,
    workdir: Path,
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
    prefer_nginx: bool,
) -> None:
    """Fill `res` step by step (a failure leaves the finished rows); stops every process."""
    backends: dict[int, Backend] = {}
    gateways: dict[int, Gateway] = {}
    try:
        for n in WORKER_COUNTS:
            backends[n] = Backend(workdir, prefer_nginx=prefer_nginx, name=f"workers{n}-backend")
            probe(f"http://127.0.0.1:{backends[n].port}{BACKEND_PATH}")
        kind = next(iter(backends.values())).kind
        res.backend = (
            ("nginx (worker_processes 1, return 200)" if kind == "nginx" else "Python")
            + ", one per gateway (ports "
            + ", ".join(str(b.port) for b in backends.values())
            + ")"
        )
        res.route = ROUTE
        for n in WORKER_COUNTS:
            name = f"gateway-w{n}"
            gateways[n] = Gateway(workdir, gateway_config(backends[n].port), name=name, workers=n)
            pids = gateway_pids(gateways[n])
            res.gateways[n] = WorkersGateway(workers=n, pid=pids[0], worker_pids=pids[1:])
            if n > 1 and len(pids) != n + 1:
                raise BenchError(f"{name}: expected {n} workers, found {len(pids) - 1}")
            log(
                f"workers: {name} on port {gateways[n].port}, pids {pids} "
                f"({gateways[n].routes} routes)"
            )
        _load(res, gateways, backends, duration_s, warmup_s, quick=quick)
    finally:
        for n, gateway in gateways.items():
            alive = gateway.child.alive()
            code = gateway.stop()
            gw = res.gateways.get(n)
            if gw is not None:
                gw.exit_code = code
                gw.access_log_lines, gw.access_log_bad = access_log_counts(
                    gateway.access_log_path, ROUTE
                )
            if not alive:
                res.notes.append(f"the {n}-worker gateway died (exit code {code})")
            if not alive or code not in (0, None):
                tail = gateway.child.stderr_tail(30)
                res.gateway_stderr_tail = (res.gateway_stderr_tail or "") + tail
        for backend in backends.values():
            backend.stop()


def _load(
    res: WorkersResults,
    gateways: dict[int, Gateway],
    backends: dict[int, Backend],
    duration_s: int,
    warmup_s: int,
    *,
    quick: bool,
) -> None:
    before = {n: backends[n].stats() for n in WORKER_COUNTS}
    for n in WORKER_COUNTS:
        url = gateways[n].url
        probe(url)
        res.gateways[n].probes += 1
        log(f"workers {n}: warm-up {warmup_s}s  {url}")
        res.gateways[n].warmup = run_wrk(url, CONNECTIONS[0], warmup_s)
    rounds = ROUNDS_QUICK if quick else ROUNDS
    backend_pids = [b.child.pid for b in backends.values()]
    for round_no in range(1, rounds + 1):
        order = WORKER_COUNTS if round_no % 2 else tuple(reversed(WORKER_COUNTS))
        for conns in CONNECTIONS:
            for n in order:
                _measure(res, gateways[n], n, conns, round_no, duration_s, backend_pids)
    log(f"workers: waiting {PUBLISH_WAIT_S}s for the workers to publish their metrics")
    time.sleep(PUBLISH_WAIT_S)
    for n in WORKER_COUNTS:
        gw = res.gateways[n]
        pids = gateway_pids(gateways[n])
        gw.processes = len(pids)
        gw.rss_idle_mb = sum(rss_kib(pid) or 0 for pid in pids) / 1024
        gw.pss_idle_mb = sum(pss_kib(pid) or 0 for pid in pids) / 1024
        gw.scrapes = [scrape(gateways[n]) for _ in range(SCRAPES)]
        after = backends[n].stats()
        # Each stats query is one connection and one request of its own: drop the second.
        gw.backend_requests = after.requests - before[n].requests - 1
        gw.backend_accepts = after.accepts - before[n].accepts - 1
        log(
            f"workers {n}: /metrics {gw.scrapes}, backend {gw.backend_requests:,} requests, "
            f"wrk completed {res.completed(n):,}"
        )


def _measure(
    res: WorkersResults,
    gateway: Gateway,
    workers: int,
    conns: int,
    round_no: int,
    duration_s: int,
    backend_pids: Sequence[int],
) -> None:
    pids = gateway_pids(gateway)
    log(f"workers {workers}: round {round_no}, {conns} connections, {duration_s}s")
    cpu_before = _cpu(pids, backend_pids)
    with GroupRssSampler(pids) as rss:
        run = run_wrk(gateway.url, conns, duration_s)
    cpu_after = _cpu(pids, backend_pids)
    gateway_cores: float | None = None
    worker_cores: tuple[float, ...] = ()
    busy: float | None = None
    other: float | None = None
    if cpu_before is not None and cpu_after is not None and run.duration_s > 0:
        elapsed = run.duration_s
        per_pid = [(b - a) / elapsed for a, b in zip(cpu_before[1], cpu_after[1], strict=True)]
        gateway_cores = sum(per_pid)
        # With workers, the first process is the supervisor (serves no traffic).
        worker_cores = tuple(per_pid[1:] if len(per_pid) > 1 else per_pid)
        busy = (cpu_after[0] - cpu_before[0]) / elapsed
        rest = (cpu_after[2] - cpu_before[2]) / elapsed  # backends, wrk, this process
        other = max(0.0, busy - gateway_cores - rest)
    res.runs.append(
        WorkersRun(
            workers=workers,
            round=round_no,
            run=run,
            rss_peak_mb=rss.peak_kib / 1024,
            gateway_cores=gateway_cores,
            worker_cores=worker_cores,
            busy_cores=busy,
            other_cores=other,
        )
    )
    split = "/".join(f"{c:.2f}" for c in worker_cores)
    log(
        f"  {run.rps:,.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms  "
        f"errors {run.errors}  RSS {rss.peak_kib / 1024:.1f} MB  "
        f"gateway {_fmt(gateway_cores)} cores ({split})  machine {_fmt(busy)} cores  "
        f"other {_fmt(other)} cores"
    )
    if not gateway.child.alive():
        raise BenchError(
            f"the {workers}-worker gateway exited during a run "
            f"(code {gateway.child.proc.returncode})"
        )
    now = gateway_pids(gateway)
    if now != pids:
        res.notes.append(
            f"{workers}-worker gateway: processes changed during round {round_no} @{conns} "
            f"({pids} -> {now}): a worker was restarted"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(pids: Sequence[int], others: Sequence[int]) -> tuple[float, list[float], float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds of each of `pids`, CPU seconds
    of the benchmark's other processes: `others`, finished children such as wrk, and
    this process)."""
    busy = system_busy_s()
    if busy is None:
        return None
    per_pid: list[float] = []
    for pid in pids:
        cpu = process_cpu_s(pid)
        if cpu is None:
            return None
        per_pid.append(cpu)
    rest = 0.0
    for pid in others:
        cpu = process_cpu_s(pid)
        if cpu is None:
            return None
        rest += cpu
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        rest += usage.ru_utime + usage.ru_stime
    return busy, per_pid, rest
