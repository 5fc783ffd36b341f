"""Kairos benchmark: gateway vs nginx proxy vs direct backend, route matching, the
load-balancing strategies (resilience section), the cost of JWT authentication and
rate limiting (edge section), and 2 worker processes vs 1 (workers section).

    uv run python bench/run.py [--only core|resilience|edge|workers|all] [--duration 10]
                               [--quick] [--json FILE]
    uv run python bench/run.py --only chain|scale|websocket|tls|cache   (not part of 'all')

See bench/README.md for what each figure means. Exit codes: 0 when the run completed
(whatever the PASS/MISS verdicts), 1 when a step failed, 2 when wrk is missing,
130 on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import cache
import chain
import edge
import machine
import resilience
import route_match
import scale
import tls
import tracing
import transform
import upload
import websocket
import workers
from procs import BenchError, log, probe, rss_kib, tail
from report import (
    EdgeResults,
    ResilienceResults,
    Results,
    Reuse,
    TargetResult,
    WorkersResults,
    render,
)
from targets import Backend, Gateway, NginxProxy, gateway_config, nginx_path
from wrk import INSTALL_HINT, run_wrk, wrk_path

SECTIONS = ("core", "resilience", "edge", "workers")
CONNECTIONS = (50, 1)
RSS_SAMPLE_INTERVAL_S = 0.25


class RssSampler:
    """Samples a process's VmRSS on a thread until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.peak_kib = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        value = rss_kib(self._pid)
        if value is not None:
            self.peak_kib = max(self.peak_kib, value)
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()  # once more at the end of the run


def load(
    label: str, role: str, url: str, duration_s: int, warmup_s: int, pid: int | None = None
) -> TargetResult:
    """Warm-up at 50 connections, then the measured 50- and 1-connection runs."""
    result = TargetResult(label=label, role=role)
    probe(url)
    log(f"{label}: warm-up {warmup_s}s  {url}")
    result.warmup = run_wrk(url, CONNECTIONS[0], warmup_s)
    for conns in CONNECTIONS:
        log(f"{label}: {conns} connection(s), {duration_s}s")
        if pid is not None and conns == CONNECTIONS[0]:
            with RssSampler(pid) as rss:
                run = run_wrk(url, conns, duration_s)
            result.rss_peak_mb = rss.peak_kib / 1024
            result.rss_samples = rss.samples
        else:
            run = run_wrk(url, conns, duration_s)
        result.runs[conns] = run
        log(
            f"  {run.rps:,.0f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms  "
            f"errors {run.errors}"
        )
    return result


def bench_gateway(
    results: Results, workdir: Path, backend: Backend, duration_s: int, warmup_s: int
) -> None:
    try:
        gateway = Gateway(workdir, gateway_config(backend.port))
    except BenchError:
        results.gateway_stderr_tail = tail(workdir / "gateway.stderr", 40)
        raise
    log(f"gateway pid {gateway.pid} on port {gateway.port} ({gateway.routes} routes)")
    stopped = False
    try:
        before = backend.stats()
        try:
            target = load(
                Gateway.label, "gateway", gateway.url, duration_s, warmup_s, pid=gateway.pid
            )
        except BenchError:
            if not gateway.child.alive():
                results.notes.append(f"gateway died: exit code {gateway.child.proc.returncode}")
            results.gateway_stderr_tail = gateway.child.stderr_tail(40)
            raise
        after = backend.stats()
        results.targets.append(target)
        if not gateway.child.alive():
            results.notes.append(f"gateway exited during the run ({gateway.child.proc.returncode})")
        # Each stats query is one connection and one request of its own: drop the second.
        results.reuse = Reuse(
            accepts=after.accepts - before.accepts - 1,
            requests=after.requests - before.requests - 1,
            client_requests=target.requests,
        )
        results.gateway_exit = gateway.stop()
        stopped = True
        results.access_log_lines = gateway.access_log_lines()
        if results.access_log_lines == 0:
            results.notes.append("the gateway access log is empty: it was not written")
        if target.errors or results.gateway_exit not in (0, None):
            results.gateway_stderr_tail = gateway.child.stderr_tail(40)
    finally:
        if not stopped:
            results.gateway_exit = gateway.stop()


def run(args: argparse.Namespace, results: Results) -> None:
    """Fill `results` step by step (so a failure still leaves the finished rows)."""
    duration_s = results.duration_s
    warmup_s = 1 if args.quick else 2
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-"))
    log(f"work dir {workdir}")
    ok = False
    try:
        if "core" in results.sections:
            run_core(args, results, workdir, duration_s, warmup_s)
        if "resilience" in results.sections:
            results.resilience = ResilienceResults()
            try:
                resilience.bench_resilience(
                    results.resilience,
                    workdir,
                    duration_s,
                    warmup_s,
                    quick=args.quick,
                    prefer_nginx=not args.python_backend,
                )
            except BenchError:
                if results.resilience.gateway_stderr_tail is None:
                    results.resilience.gateway_stderr_tail = tail(workdir / "gateway-lb.stderr", 40)
                raise
        if "edge" in results.sections:
            results.edge = EdgeResults()
            try:
                edge.bench_edge(
                    results.edge,
                    workdir,
                    duration_s,
                    warmup_s,
                    quick=args.quick,
                    prefer_nginx=not args.python_backend,
                )
            except BenchError:
                if results.edge.gateway_stderr_tail is None:
                    results.edge.gateway_stderr_tail = tail(workdir / "gateway-edge.stderr", 40)
                raise
        if "workers" in results.sections:
            results.workers = WorkersResults()
            workers.bench_workers(
                results.workers,
                workdir,
                duration_s,
                warmup_s,
                quick=args.quick,
                prefer_nginx=not args.python_backend,
            )
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")


def run_core(
    args: argparse.Namespace, results: Results, workdir: Path, duration_s: int, warmup_s: int
) -> None:
    """The core section: route matching, then backend / nginx proxy / gateway under load."""
    log("route matching micro-benchmark (in-process, before any load)")
    results.routes = route_match.bench(quick=args.quick)
    backend: Backend | None = None
    try:
        backend = Backend(workdir, prefer_nginx=not args.python_backend)
        results.backend_kind = (
            f"nginx (worker_processes 1, return 200) on 127.0.0.1:{backend.port}"
            if backend.kind == "nginx"
            else f"Python asyncio fallback (bench/pybackend.py) on 127.0.0.1:{backend.port}"
        )
        log(f"backend: {results.backend_kind}")
        results.targets.append(load(backend.label, "backend", backend.url, duration_s, warmup_s))

        if nginx_path() is not None:
            proxy = NginxProxy(workdir, backend.port)
            try:
                results.targets.append(
                    load(NginxProxy.label, "proxy", proxy.url, duration_s, warmup_s)
                )
            finally:
                proxy.stop()
        else:
            results.notes.append("nginx not installed: no reference proxy row")

        bench_gateway(results, workdir, backend, duration_s, warmup_s)
    finally:
        if backend is not None:
            backend.stop()


def _to_json(results: Results) -> dict[str, object]:
    data = asdict(results)
    for target, raw in zip(results.targets, data["targets"], strict=True):
        raw["runs"] = {str(c): r.to_dict() for c, r in target.runs.items()}
        raw["warmup"] = target.warmup.to_dict() if target.warmup else None
    data["resilience"] = results.resilience.to_dict() if results.resilience else None
    data["edge"] = results.edge.to_dict() if results.edge else None
    data["workers"] = results.workers.to_dict() if results.workers else None
    return data


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Kairos gateway benchmark (see bench/README.md)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--quick", action="store_true", help="smoke run (3s runs, ~2 minutes)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--python-backend", action="store_true", help="use the Python backend even with nginx"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    parser.add_argument(
        "--only",
        choices=(
            *SECTIONS,
            *("chain", "scale", "websocket", "tls", "upload", "transform", "tracing", "cache"),
            "all",
        ),
        default="all",
        help="run only the core comparison or the load-balancing, edge-security or workers "
        "section; not part of 'all': 'chain' (the policy chain's A/B, bench/chain.py) and "
        "'scale' (50 to 10,000 client connections, bench/scale.py), 'websocket' (1,000 "
        "WebSocket connections echoing, bench/websocket.py), 'tls' (HTTPS vs plain HTTP "
        "and TLS handshakes, bench/tls.py), 'upload' (1 GiB and 30 x 10 MiB uploads and the "
        "gateway's memory, bench/upload.py), 'transform' (the transform plugin vs a plain "
        "route, bench/transform.py), 'tracing' (trace propagation and span export vs a "
        "plain gateway, bench/tracing.py), 'cache' (a cache hit vs the same route proxied, "
        "bench/cache.py)",
    )
    parser.add_argument(
        "--baseline", help="with --only chain, scale or upload: the git ref to compare with"
    )
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.only == "chain":
        passed = ["--baseline", args.baseline or "HEAD~1", "--duration", str(args.duration)]
        return chain.main([*passed, *(["--quick"] if args.quick else [])])
    if args.only == "scale":
        passed = ["--duration", str(args.duration)]
        return scale.main([*passed, *(["--baseline", args.baseline] if args.baseline else [])])
    if args.only == "tls":
        passed = ["--duration", str(args.duration)]
        extra = [
            *(["--quick"] if args.quick else []),
            *(["--python-backend"] if args.python_backend else []),
        ]
        return tls.main([*passed, *extra])
    if args.only == "transform":
        passed = ["--duration", str(args.duration)]
        return transform.main([*passed, *(["--quick"] if args.quick else [])])
    if args.only == "cache":
        passed = ["--duration", str(args.duration)]
        return cache.main([*passed, *(["--quick"] if args.quick else [])])
    if args.only == "tracing":
        passed = ["--duration", str(args.duration)]
        return tracing.main([*passed, *(["--quick"] if args.quick else [])])
    if args.only == "upload":
        return upload.main(["--baseline", args.baseline] if args.baseline else [])
    if args.only == "websocket":
        passed = ["--duration", str(args.duration)]
        return websocket.main([*passed, *(["--quick"] if args.quick else [])])
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    results = Results(
        machine=machine.describe(),
        backend_kind="",
        duration_s=3 if args.quick else args.duration,
        targets=[],
        routes=[],
        sections=list(SECTIONS) if args.only == "all" else [args.only],
    )
    code = 0
    try:
        run(args, results)
    except KeyboardInterrupt:
        log("interrupted; processes stopped")
        return 130
    except BenchError as exc:
        log(f"FAILED: {exc}")
        if (
            not results.targets
            and not (results.resilience and results.resilience.runs)
            and not (results.edge and (results.edge.runs or results.edge.micro))
            and not (results.workers and results.workers.runs)
        ):
            return 1
        results.notes.append(f"INCOMPLETE RUN: {str(exc).splitlines()[0].removesuffix(':')}")
        code = 1
    print(render(results))
    log(f"done in {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_to_json(results), indent=2, default=str) + "\n")
        log(f"results written to {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
