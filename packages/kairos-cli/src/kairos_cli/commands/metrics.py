"""`kairos metrics`: a snapshot, or a table that refreshes (``--watch``)."""

from __future__ import annotations

import asyncio
import contextlib

import click
from kairos_client import KairosClient
from kairos_core import MetricsSnapshot, TrafficSummary
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..errors import ExitStatus
from ..output import (
    console,
    echo_json,
    fmt_duration,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    key_values,
    table,
    yes_no,
)

__all__ = ["metrics", "metrics_view"]


def _aside(part: TrafficSummary | None, what: str) -> str:
    """One line for traffic kept out of the routed totals."""
    if part is None:
        return "-"
    return (
        f"{part.requests} requests, {fmt_rate(part.requests_per_second.last_10s)}/s (10 s), "
        f"{part.client_errors} 4xx, {part.server_errors} 5xx ({what})"
    )


def metrics_view(snapshot: MetricsSnapshot) -> RenderableType:
    """Routed totals, the admin and unmatched traffic kept apart, then one table per
    route and per backend."""
    totals = snapshot.totals
    latency = snapshot.latency_ms_1m
    summary = key_values(
        [
            (
                "At",
                f"{snapshot.timestamp} (up {fmt_duration(snapshot.uptime_s)}, "
                f"config version {snapshot.config_version})",
            ),
            (
                "Requests",
                f"{totals.requests} routed, {totals.success} ok, "
                f"{totals.client_errors} 4xx, {totals.server_errors} 5xx, "
                f"{snapshot.active_requests} active",
            ),
            (
                "Req/s",
                f"{fmt_rate(snapshot.requests_per_second.last_10s)} (10 s), "
                f"{fmt_rate(snapshot.requests_per_second.last_1m)} (1 min)",
            ),
            (
                "Success",
                f"{fmt_ratio(snapshot.success_rate_1m)} (1 min), "
                f"{fmt_ratio(totals.success_rate)} (total)",
            ),
            (
                "Latency ms",
                f"p50 {fmt_ms(latency.p50)}  p95 {fmt_ms(latency.p95)}  "
                f"p99 {fmt_ms(latency.p99)} (1 min)",
            ),
            ("Admin", _aside(snapshot.admin, "management API, /health, /ready, /live, /metrics")),
            ("Unmatched", _aside(snapshot.unmatched, "no route: 404, bad path")),
        ]
    )
    routes = table(
        "Routes", ["route", "requests", "req/s 1m", "4xx", "5xx", "success", "p50", "p95", "p99"]
    )
    for route in snapshot.routes:
        routes.add_row(
            escape(route.route),
            str(route.requests),
            fmt_rate(route.requests_per_second_1m),
            str(route.client_errors),
            str(route.server_errors),
            fmt_ratio(route.success_rate),
            fmt_ms(route.latency_ms_1m.p50),
            fmt_ms(route.latency_ms_1m.p95),
            fmt_ms(route.latency_ms_1m.p99),
        )
    backends = table(
        "Backends",
        [
            "address",
            "in use",
            "healthy",
            "breaker",
            "in flight",
            "responses",
            "errors",
            "p50",
            "p95",
        ],
    )
    for backend in snapshot.backends:
        backends.add_row(
            backend.address,
            yes_no(backend.in_use),
            yes_no(backend.healthy),
            backend.circuit_breaker or "-",
            str(backend.inflight),
            str(backend.responses),
            str(backend.errors),
            fmt_ms(backend.latency_ms_1m.p50),
            fmt_ms(backend.latency_ms_1m.p95),
        )
    return Group(summary, routes, backends)


async def _watch(
    client: KairosClient, settings: Settings, interval: float, count: int | None
) -> None:
    out = console()
    shown = 0
    # On a terminal the table is redrawn in place; piped, each snapshot is printed.
    live = Live(console=out, auto_refresh=False) if out.is_terminal and not settings.json else None
    with live if live is not None else contextlib.nullcontext():
        while count is None or shown < count:
            if shown:
                await asyncio.sleep(interval)
            snapshot = await client.metrics()
            shown += 1
            if settings.json:
                echo_json(snapshot, compact=True)
            elif live is not None:
                live.update(metrics_view(snapshot), refresh=True)
            else:
                if shown > 1:
                    out.print()
                out.print(metrics_view(snapshot))


@click.command()
@click.option("--watch", "-w", is_flag=True, help="Refresh until interrupted (or --count).")
@click.option(
    "--interval",
    "-n",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--count",
    "-c",
    type=click.IntRange(min=1),
    help="Stop after this many snapshots (implies --watch).",
)
@pass_settings
def metrics(settings: Settings, watch: bool, interval: float, count: int | None) -> None:
    """Request rates, success rate and latency, per route and per backend.

    With --watch the table refreshes every --interval seconds; with --json each
    snapshot is one line of JSON.
    """
    if not watch and count is None:
        result = run(settings, lambda client: client.metrics())
        if settings.json:
            echo_json(result)
        else:
            console().print(metrics_view(result))
        return
    try:
        run(settings, lambda client: _watch(client, settings, interval, count))
    except KeyboardInterrupt:
        raise click.exceptions.Exit(ExitStatus.OK) from None
