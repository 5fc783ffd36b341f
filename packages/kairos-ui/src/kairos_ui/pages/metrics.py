"""Metrics (``/metrics``): the gateway's history over 15 min / 1 h / 6 h / 24 h, and
per-route and per-backend charts and tables."""

from __future__ import annotations

from typing import Any

from kairos_client import KairosClientError
from kairos_core import HistoryPoint, MetricsSnapshot
from nicegui import ui

from .. import charts, format
from ..gateway import Gateway, describe
from ..layout import frame
from ..sampler import Sampler, backend_series, route_series
from ..settings import UiSettings
from ..widgets import chart, set_chart

__all__ = ["RANGES", "register"]

#: Range label -> (range, step) for /api/metrics/history; about 90-360 points each.
RANGES: dict[str, tuple[str, str, float]] = {
    "15 min": ("15m", "10s", 900),
    "1 h": ("1h", "10s", 3600),
    "6 h": ("6h", "60s", 6 * 3600),
    "24 h": ("24h", "240s", 24 * 3600),
}

ROUTE_COLUMNS: list[dict[str, Any]] = [
    {"name": "route", "label": "Route", "field": "route", "align": "left", "sortable": True},
    {"name": "requests", "label": "Requests", "field": "requests", "sortable": True},
    {"name": "rps", "label": "Req/s (1 min)", "field": "rps", "sortable": True},
    {"name": "errors", "label": "4xx / 5xx", "field": "errors"},
    {"name": "success", "label": "Success", "field": "success"},
    {"name": "latency", "label": "p50 / p95 / p99", "field": "latency"},
]
BACKEND_COLUMNS: list[dict[str, Any]] = [
    {"name": "address", "label": "Backend", "field": "address", "align": "left"},
    {"name": "state", "label": "State", "field": "state", "align": "left"},
    {"name": "responses", "label": "Responses", "field": "responses", "sortable": True},
    {"name": "errors", "label": "Errors", "field": "errors", "sortable": True},
    {"name": "inflight", "label": "In flight", "field": "inflight"},
    {"name": "latency", "label": "p50 / p95 / p99", "field": "latency"},
]


def _latency(p50: float | None, p95: float | None, p99: float | None) -> str:
    return " / ".join(format.ms(v) for v in (p50, p95, p99))


def route_rows(snapshot: MetricsSnapshot) -> list[dict[str, Any]]:
    return [
        {
            "route": r.route,
            "requests": r.requests,
            "rps": round(r.requests_per_second_1m, 2),
            "errors": f"{r.client_errors} / {r.server_errors}",
            "success": format.percent(r.success_rate),
            "latency": _latency(r.latency_ms_1m.p50, r.latency_ms_1m.p95, r.latency_ms_1m.p99),
        }
        for r in snapshot.routes
    ]


def backend_rows(snapshot: MetricsSnapshot) -> list[dict[str, Any]]:
    rows = []
    for b in snapshot.backends:
        state = "healthy" if b.healthy is not False else "unhealthy"
        if b.circuit_breaker and b.circuit_breaker != "closed":
            state += f", breaker {b.circuit_breaker}"
        if not b.in_use:
            state += " (no route uses it)"
        lat = b.latency_ms_1m
        rows.append(
            {
                "address": b.address,
                "state": state,
                "responses": b.responses,
                "errors": b.errors,
                "inflight": b.inflight,
                "latency": _latency(lat.p50, lat.p95, lat.p99),
            }
        )
    return rows


def active_chart(points: list[HistoryPoint]) -> dict[str, Any]:
    data = [[p.timestamp, p.active_requests] for p in points]
    return charts.line_chart("Active requests", "", [("active", data)])


def register(settings: UiSettings, gateway: Gateway, sampler: Sampler) -> None:
    @ui.page("/metrics", title="Kairos · metrics")
    def metrics_page() -> None:
        empty: list[HistoryPoint] = []
        with frame(settings, "/metrics") as banner:
            with ui.row().classes("w-full items-center"):
                ui.label("Metrics").classes("text-2xl font-semibold")
                ui.space()
                choice = ui.toggle(list(RANGES), value="1 h").mark("range")
            grid = "repeat(auto-fit, minmax(26rem, 1fr))"
            ui.label("Whole gateway").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                with ui.card().classes("p-2"):
                    rps = chart(charts.requests_chart(empty), "metrics-rps")
                with ui.card().classes("p-2"):
                    errors = chart(charts.errors_chart(empty), "metrics-errors")
                with ui.card().classes("p-2"):
                    latency = chart(charts.latency_chart(empty), "metrics-latency")
                with ui.card().classes("p-2"):
                    active = chart(active_chart(empty), "metrics-active")
            ui.label("Per route").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                with ui.card().classes("p-2"):
                    route_rps = chart(
                        charts.line_chart("Requests per route", "req/s", []), "route-rps"
                    )
                with ui.card().classes("p-2"):
                    route_p95 = chart(
                        charts.line_chart("Latency p95 per route", "ms", []), "route-p95"
                    )
            routes_table = ui.table(columns=ROUTE_COLUMNS, rows=[], row_key="route")
            routes_table.classes("w-full").props("flat bordered dense").mark("route-table")
            ui.label("Per backend").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                with ui.card().classes("p-2"):
                    backend_rps = chart(
                        charts.line_chart("Responses per backend", "resp/s", []), "backend-rps"
                    )
                with ui.card().classes("p-2"):
                    backend_p95 = chart(
                        charts.line_chart("Latency p95 per backend", "ms", []), "backend-p95"
                    )
            backends_table = ui.table(columns=BACKEND_COLUMNS, rows=[], row_key="address")
            backends_table.classes("w-full").props("flat bordered dense").mark("backend-table")
            ui.label(
                "Whole-gateway charts come from the gateway's own 24 h history. Per-route "
                "and per-backend charts are sampled by this UI while it runs "
                f"(every {sampler.interval_s:g} s), so they start when the UI started."
            ).classes("text-xs opacity-60")

        async def refresh() -> None:
            range_, step, seconds = RANGES[str(choice.value)]
            try:
                history = await gateway.client.metrics_history(range_, step)
                snapshot = await gateway.client.metrics()
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            points = history.points
            set_chart(rps, charts.requests_chart(points))
            set_chart(errors, charts.errors_chart(points))
            set_chart(latency, charts.latency_chart(points))
            set_chart(active, active_chart(points))
            samples = sampler.last(seconds)
            set_chart(
                route_rps,
                charts.line_chart("Requests per route", "req/s", route_series(samples, "rps")),
            )
            set_chart(
                route_p95,
                charts.line_chart("Latency p95 per route", "ms", route_series(samples, "p95")),
            )
            set_chart(
                backend_rps,
                charts.line_chart(
                    "Responses per backend", "resp/s", backend_series(samples, "rps")
                ),
            )
            set_chart(
                backend_p95,
                charts.line_chart("Latency p95 per backend", "ms", backend_series(samples, "p95")),
            )
            routes_table.rows = route_rows(snapshot)
            backends_table.rows = backend_rows(snapshot)
            routes_table.update()
            backends_table.update()

        choice.on_value_change(refresh)
        ui.timer(max(settings.poll_interval_s, 2.0), refresh, immediate=True)
