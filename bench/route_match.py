"""Route-matching micro-benchmark: `RouteTable.match` at 10, 1,000 and 10,000 routes.

Static tables hold `/svc{i}/items`, dynamic ones `/svc{i}/items/{id}/detail`. "hit" times
paths spread evenly over the table; "miss" a path that shares a prefix with a route but
matches none (so the lookup goes as deep as it can). Figures are ns per `match` call,
the best of several timeit repeats.

    uv run python bench/route_match.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from kairos_core import Match, RouteTable, load_config

Kind = Literal["static", "dynamic"]
SIZES = (10, 1_000, 10_000)
KINDS: tuple[Kind, ...] = ("static", "dynamic")
_SAMPLE_PATHS = 100


@dataclass(frozen=True, slots=True)
class MatchTiming:
    kind: Kind
    routes: int
    case: Literal["hit", "miss"]
    ns_per_match: float

    @property
    def label(self) -> str:
        return f"route match {self.kind} {self.routes:,} {self.case}"


def build_table(kind: Kind, size: int) -> RouteTable:
    backend = {"host": "http://127.0.0.1", "port": 8081}
    routers = [
        {
            "external_path": (
                f"/svc{i}/items" if kind == "static" else f"/svc{i}/items/{{id}}/detail"
            ),
            "internal_path": f"/internal/svc{i}" + ("" if kind == "static" else "/{id}"),
            "methods": ["GET"],
            "backends": [backend],
        }
        for i in range(size)
    ]
    return RouteTable(load_config({"version": 1, "routers": routers}).routers)


def hit_paths(kind: Kind, size: int) -> list[str]:
    step = max(1, size // _SAMPLE_PATHS)
    indices = range(0, size, step)
    if kind == "static":
        return [f"/svc{i}/items" for i in indices]
    return [f"/svc{i}/items/{1000 + i}/detail" for i in indices]


def miss_path(kind: Kind, size: int) -> str:
    middle = size // 2
    return f"/svc{middle}/other" if kind == "static" else f"/svc{middle}/items/42/other"


def _time_per_call(table: RouteTable, paths: list[str], repeat: int, budget_s: float) -> float:
    match = table.match

    def run() -> None:
        for path in paths:
            match("GET", path)

    timer = timeit.Timer(run)
    loops, elapsed = timer.autorange()
    number = max(1, int(loops * budget_s / max(elapsed, 1e-9)))
    best = min(timer.repeat(repeat=repeat, number=number))
    return best / number / len(paths) * 1e9


def bench(quick: bool = False) -> list[MatchTiming]:
    repeat, budget_s = (3, 0.05) if quick else (5, 0.2)
    results: list[MatchTiming] = []
    # Warm the interpreter (adaptive specialisation) and the CPU clock first: without this
    # the first table measured reads up to 2x slower than the same table measured later.
    warm = build_table("dynamic", SIZES[0])
    _time_per_call(warm, hit_paths("dynamic", SIZES[0]), 3, 0.2)
    for kind in KINDS:
        for size in SIZES:
            table = build_table(kind, size)
            hits = hit_paths(kind, size)
            for path in hits:  # the benchmark must time real matches
                if not isinstance(table.match("GET", path), Match):
                    raise AssertionError(f"{path} should match in the {kind} {size} table")
            miss = miss_path(kind, size)
            if isinstance(table.match("GET", miss), Match):
                raise AssertionError(f"{miss} should not match")
            results.append(
                MatchTiming(kind, size, "hit", _time_per_call(table, hits, repeat, budget_s))
            )
            results.append(
                MatchTiming(kind, size, "miss", _time_per_call(table, [miss], repeat, budget_s))
            )
    return results


def dynamic_ratio(results: list[MatchTiming]) -> float:
    """Dynamic hit time at 10,000 routes divided by that at 10 routes."""
    by_key = {(r.kind, r.routes, r.case): r.ns_per_match for r in results}
    return by_key[("dynamic", 10_000, "hit")] / by_key[("dynamic", 10, "hit")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RouteTable.match micro-benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)
    results = bench(quick=args.quick)
    width = max(len(r.label) for r in results)
    for r in results:
        print(f"{r.label:<{width}}  {r.ns_per_match:8.0f} ns/match")
    ratio = dynamic_ratio(results)
    print(f"dynamic hit 10,000 / 10 routes: {ratio:.2f}x")
    if args.json:
        data = {"results": [asdict(r) for r in results], "dynamic_10k_over_10": ratio}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
