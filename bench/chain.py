"""Chain section: what the policy chain costs the plain proxy path, and what plugins cost.

    uv run python bench/run.py --only chain [--baseline REF] [--duration 10] [--quick]
    uv run python bench/chain.py [--baseline REF] [--duration 10] [--rounds 4] [--quick]

Two A/B comparisons, each in one run against one nginx backend, wrk -t1 -c50, in
rounds that alternate which side goes first (A B, then B A, ...), so drift over the
run affects both sides alike:

* **plain path, before vs after**: a gateway running the code of ``--baseline`` (a git
  ref, default ``HEAD~1``; checked out into the work dir with `git worktree`) against
  the gateway of the working tree, same config (one route `/plain/{id}`). The baseline
  runs from its own source tree (PYTHONPATH) on the working tree's installed
  dependencies.
* **plugins vs plain**: one gateway of the working tree with two routes to the same
  backend path: `/plain/{id}` and `/plugins/{id}` with six no-op plugins, one per
  phase (on_headers, on_request, before_upstream, on_response, on_chunk,
  on_complete). The plugins are a real distribution found through the
  ``kairos.plugins`` entry points: the script writes a module and its ``.dist-info``
  into the work dir and puts that on the gateway's PYTHONPATH.

Exit codes: 0 when the run completed (whatever the verdicts), 1 when a step failed,
2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from procs import BenchError, log, probe, process_cpu_s
from targets import BACKEND_PATH, REPO_ROOT, Backend, Gateway
from wrk import INSTALL_HINT, WrkResult, run_wrk, wrk_path

CONNECTIONS = 50
TARGET_PLAIN = 0.97  # after / before, plain path
TARGET_PLUGINS = 0.92  # plugins route / plain route

PHASES = ("on_headers", "on_request", "before_upstream", "on_response", "on_chunk", "on_complete")

_PLUGIN_MODULE = '''"""No-op plugins for the chain benchmark: one per phase, each does nothing."""

from pydantic import BaseModel
from kairos_gateway import Plugin, Policy


class Empty(BaseModel):
    pass


class OnHeaders(Policy):
    def on_headers(self, request):
        return None


class OnRequest(Policy):
    def on_request(self, request):
        return None


class BeforeUpstream(Policy):
    def before_upstream(self, request, upstream):
        return None


class OnResponse(Policy):
    def on_response(self, request, response):
        return None


class OnChunk(Policy):
    def on_chunk(self, request, chunk):
        return chunk


class OnComplete(Policy):
    def on_complete(self, request):
        return None


def _make(cls):
    return lambda config: cls()


noop_on_headers = Plugin(name="noop-on-headers", config=Empty, policy=_make(OnHeaders))
noop_on_request = Plugin(name="noop-on-request", config=Empty, policy=_make(OnRequest))
noop_before_upstream = Plugin(
    name="noop-before-upstream", config=Empty, policy=_make(BeforeUpstream)
)
noop_on_response = Plugin(name="noop-on-response", config=Empty, policy=_make(OnResponse))
noop_on_chunk = Plugin(name="noop-on-chunk", config=Empty, policy=_make(OnChunk))
noop_on_complete = Plugin(name="noop-on-complete", config=Empty, policy=_make(OnComplete))
'''


def _plugin_names() -> list[str]:
    return [f"noop-{phase.replace('_', '-')}" for phase in PHASES]


def install_noop_plugins(root: Path) -> Path:
    """Write the no-op plugin distribution into ``root``; returns the path to put on
    PYTHONPATH (importlib.metadata finds the ``.dist-info`` there)."""
    site = root / "bench-plugins"
    site.mkdir()
    (site / "kairos_bench_noop.py").write_text(_PLUGIN_MODULE)
    info = site / "kairos_bench_noop-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kairos-bench-noop\nVersion: 0.0.0\n"
    )
    lines = ["[kairos.plugins]"]
    for name in _plugin_names():
        lines.append(f"{name} = kairos_bench_noop:{name.replace('-', '_')}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def _route(external: str, port: int, plugins: list[str] | None = None) -> dict[str, object]:
    route: dict[str, object] = {
        "external_path": external,
        "internal_path": "/users/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://127.0.0.1", "port": port}],
    }
    if plugins:
        route["plugins"] = [{"name": name} for name in plugins]
    return route


def baseline_tree(ref: str, workdir: Path) -> Path:
    """A checkout of ``ref`` in the work dir (removed again by `drop_tree`)."""
    tree = workdir / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tree


def drop_tree(tree: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
        check=False,
        capture_output=True,
        timeout=60,
    )


def source_path(tree: Path) -> str:
    return ":".join(
        str(tree / "packages" / name / "src") for name in ("kairos-gateway", "kairos-core")
    )


Run = tuple[WrkResult, float]  # wrk's figures, gateway CPU seconds per request


def alternate(
    sides: dict[str, tuple[str, int]], duration_s: int, rounds: int, warmup_s: int
) -> dict[str, list[Run]]:
    """wrk runs on each side's (URL, gateway pid), alternating the order every round;
    each run also records the gateway process's CPU time per request (utime + stime),
    a figure less moved by what else the machine is doing than req/s."""
    names = list(sides)
    for name in names:
        log(f"  warm-up {name}: {warmup_s}s")
        run_wrk(sides[name][0], CONNECTIONS, warmup_s)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names if round_no % 2 == 0 else list(reversed(names))
        for name in order:
            url, pid = sides[name]
            cpu_before = process_cpu_s(pid)
            result = run_wrk(url, CONNECTIONS, duration_s)
            cpu_after = process_cpu_s(pid)
            if result.errors:
                raise BenchError(f"{name}: {result.errors} errors in {result.requests} requests")
            if cpu_before is None or cpu_after is None or not result.requests:
                raise BenchError(f"{name}: the gateway process is gone")
            cpu = (cpu_after - cpu_before) / result.requests
            log(
                f"  round {round_no + 1} {name}: {result.rps:,.0f} req/s "
                f"p50 {result.p50_ms} ms, {cpu * 1e6:.0f} us CPU/request"
            )
            runs[name].append((result, cpu))
    return runs


def _summary(runs: dict[str, list[Run]], a: str, b: str, target: float) -> str:
    ra = statistics.median(r.rps for r, _ in runs[a])
    rb = statistics.median(r.rps for r, _ in runs[b])
    ca = statistics.median(c for _, c in runs[a])
    cb = statistics.median(c for _, c in runs[b])
    ratio = rb / ra
    verdict = "PASS" if ratio >= target else "MISS"
    each = "; ".join(
        f"{x.rps:,.0f} / {y.rps:,.0f}" for (x, _), (y, _) in zip(runs[a], runs[b], strict=True)
    )
    return (
        f"{b} / {a}: {ratio:.3f}x req/s (median {rb:,.0f} vs {ra:,.0f}; per round "
        f"{a} / {b}: {each}); CPU per request {cb * 1e6:.0f} vs {ca * 1e6:.0f} us "
        f"({ca / cb:.3f}x); target >= {target} {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD~1", help="git ref of the 'before' code")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    warmup = 2 if args.quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-chain-"))
    backend: Backend | None = None
    gateways: list[Gateway] = []
    tree: Path | None = None
    lines: list[str] = []
    try:
        backend = Backend(workdir, name="chain-backend")
        probe(f"http://127.0.0.1:{backend.port}{BACKEND_PATH}")
        plain = {"version": 1, "routers": [_route("/plain/{id}", backend.port)]}
        if not args.skip_baseline:
            tree = baseline_tree(args.baseline, workdir)
            log(f"plain path: {args.baseline} vs working tree")
            before = Gateway(
                workdir, plain, name="gw-before", env={"PYTHONPATH": source_path(tree)}
            )
            after = Gateway(workdir, plain, name="gw-after")
            gateways += [before, after]
            runs = alternate(
                {
                    "before": (before.url_for("/plain/123"), before.pid),
                    "after": (after.url_for("/plain/123"), after.pid),
                },
                duration,
                rounds,
                warmup,
            )
            lines.append("plain path " + _summary(runs, "before", "after", TARGET_PLAIN))
            for gw in (before, after):
                gw.stop()
            gateways.clear()
        site = install_noop_plugins(workdir)
        config = {
            "version": 1,
            "routers": [
                _route("/plain/{id}", backend.port),
                _route("/plugins/{id}", backend.port, _plugin_names()),
            ],
        }
        log("plugins: 6 no-op plugins (one per phase) vs the plain route, one gateway")
        gateway = Gateway(workdir, config, name="gw-plugins", env={"PYTHONPATH": str(site)})
        gateways.append(gateway)
        runs = alternate(
            {
                "plain": (gateway.url_for("/plain/123"), gateway.pid),
                "plugins": (gateway.url_for("/plugins/123"), gateway.pid),
            },
            duration,
            rounds,
            warmup,
        )
        lines.append("plugin route " + _summary(runs, "plain", "plugins", TARGET_PLUGINS))
    except BenchError as exc:
        print(f"chain bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        for gw in gateways:
            gw.stop()
        if backend is not None:
            backend.stop()
        if tree is not None:
            drop_tree(tree)
    print(f"\nChain section (wrk -t1 -c{CONNECTIONS}, {duration}s x {rounds} rounds)")
    for line in lines:
        print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
