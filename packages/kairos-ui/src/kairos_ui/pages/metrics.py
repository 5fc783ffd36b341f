"""Metrics (``/metrics``): the gateway's history over 15 min / 1 h / 6 h / 24 h, and
per-route and per-backend charts and tables.

Every chart comes from the gateway's own in-memory history (``/api/metrics/history``,
with ``route=`` / ``backend=`` for the per-label ones), so they cover the chosen range
whenever this UI was started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kairos_client import KairosClient, KairosClientError, NotFound
from kairos_core import HistoryPoint, MetricsHistory, MetricsSnapshot
from nicegui import ui

from .. import charts, format
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings
from ..widgets import ChartCard
from .ai_section import ai_section

__all__ = [
    "MAX_SERIES",
    "RANGES",
    "label_histories",
    "label_series",
    "page_step",
    "register",
]

#: Per-route and per-backend charts show this many labels at most (the busiest).
MAX_SERIES = 10

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
    {"name": "rps", "label": "Req/s (last min)", "field": "rps", "sortable": True},
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


def busiest_routes(snapshot: MetricsSnapshot) -> list[str]:
    ranked = sorted(snapshot.routes, key=lambda r: (-r.requests_per_second_1m, -r.requests))
    return [r.route for r in ranked[:MAX_SERIES]]


def busiest_backends(snapshot: MetricsSnapshot) -> list[str]:
    ranked = sorted(snapshot.backends, key=lambda b: (-(b.responses + b.errors), b.address))
    return [b.address for b in ranked[:MAX_SERIES]]


async def label_histories(
    client: KairosClient,
    kind: Literal["route", "backend"],
    labels: Sequence[str],
    range_: str,
    step: str,
) -> dict[str, MetricsHistory]:
    """The gateway's history of each label (fetched concurrently); a label it no longer
    knows (404), or a gateway without per-label history, leaves that label out."""

    async def one(label: str) -> MetricsHistory | None:
        try:
            history = await client.metrics_history(
                range_,
                step,
                route=label if kind == "route" else None,
                backend=label if kind == "backend" else None,
            )
        except NotFound:
            return None
        return history if history.kind == kind else None

    found = await asyncio.gather(*(one(label) for label in labels))
    return {label: h for label, h in zip(labels, found, strict=True) if h is not None}


def page_step(range_step_s: float, *labelled: Mapping[str, MetricsHistory]) -> float:
    """The one step every chart of the page uses: the gateway's per-label step when
    there are per-label charts (it is never finer than a minute by default), else the
    range's. Same step, same numbers: the whole-gateway chart is then the sum of the
    per-route ones, and its last point the table's one-minute rate."""
    steps = [h.step_s for histories in labelled for h in histories.values()]
    return max([range_step_s, *steps])


def label_series(
    histories: Mapping[str, Sequence[HistoryPoint]], metric: str
) -> list[charts.Series]:
    """One chart series per label: ``rps`` (requests/s), ``p95`` (ms) or ``errors``
    (4xx + 5xx, or upstream errors for a backend, in percent of the step's requests)."""
    out: list[charts.Series] = []
    for label, points in histories.items():
        data: list[list[Any]] = []
        for p in points:
            value: float | None
            if metric == "rps":
                value = p.requests_per_second
            elif metric == "p95":
                value = p.latency_ms.p95
            else:
                value = None if p.error_rate is None else round(100 * p.error_rate, 2)
            data.append([p.timestamp, value])
        out.append((label, data))
    return out


def active_chart(points: Sequence[HistoryPoint], *, dark: bool = False) -> dict[str, Any]:
    data = [[p.timestamp, p.active_requests] for p in points]
    return charts.line_chart("requests", [("active", data)], dark=dark)


def labels_chart(
    unit: str,
    histories: Mapping[str, MetricsHistory],
    metric: str,
    span: tuple[str, str] | None = None,
    *,
    dark: bool = False,
) -> dict[str, Any]:
    """One line per label of ``metric`` (see `label_series`), on the time axis ``span``
    of the whole-gateway charts."""
    points = {label: h.points for label, h in histories.items()}
    return charts.line_chart(unit, label_series(points, metric), dark=dark, span=span)


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/metrics", title="Kairos · metrics")
    def metrics_page() -> None:
        empty: list[HistoryPoint] = []
        none: dict[str, MetricsHistory] = {}
        with frame(settings, "/metrics") as banner:
            with ui.row().classes("w-full items-center"):
                ui.label("Metrics").classes("text-2xl font-semibold")
                ui.space()
                choice = ui.toggle(list(RANGES), value="1 h").mark("range")
            grid = "repeat(auto-fit, minmax(26rem, 1fr))"
            ui.label("Whole gateway").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                rps = ChartCard("Requests per second", "metrics-rps", charts.requests_chart, empty)
                errors = ChartCard(
                    "Error rate, 4xx + 5xx", "metrics-errors", charts.errors_chart, empty
                )
                latency = ChartCard("Latency", "metrics-latency", charts.latency_chart, empty)
                active = ChartCard("Active requests", "metrics-active", active_chart, empty)
            ui.label("Per route").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                route_rps = ChartCard(
                    "Requests per route", "route-rps", labels_chart, charts.RPS, none, "rps"
                )
                route_p95 = ChartCard(
                    "Latency p95 per route", "route-p95", labels_chart, "ms", none, "p95"
                )
            routes_table = ui.table(columns=ROUTE_COLUMNS, rows=[], row_key="route")
            routes_table.classes("w-full").props("flat bordered dense").mark("route-table")
            ui.label("Per backend").classes("text-lg font-semibold")
            with ui.grid(columns=grid).classes("w-full gap-3"):
                backend_rps = ChartCard(
                    "Requests per backend", "backend-rps", labels_chart, charts.RPS, none, "rps"
                )
                backend_p95 = ChartCard(
                    "Latency p95 per backend", "backend-p95", labels_chart, "ms", none, "p95"
                )
            backends_table = ui.table(columns=BACKEND_COLUMNS, rows=[], row_key="address")
            backends_table.classes("w-full").props("flat bordered dense").mark("backend-table")
            note = ui.label("").classes("text-xs opacity-60").mark("metrics-note")
            ai_section(settings, gateway, banner)

        async def refresh() -> None:
            range_, step, _ = RANGES[str(choice.value)]
            client = gateway.client
            try:
                snapshot = await client.metrics()
                per_route, per_backend = await asyncio.gather(
                    label_histories(client, "route", busiest_routes(snapshot), range_, step),
                    label_histories(client, "backend", busiest_backends(snapshot), range_, step),
                )
                step_s = page_step(parse_step(step), per_route, per_backend)
                history = await client.metrics_history(range_, f"{step_s:g}s")
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            caption = f"{format.step(history.step_s)} steps"
            points = history.points
            rps.show(points, caption=caption)
            errors.show(points, caption=caption)
            latency.show(points, caption=caption)
            active.show(points, caption=f"{caption}, at the end of each")
            busiest = f"{caption} · the {MAX_SERIES} busiest"
            span = (points[0].timestamp, points[-1].timestamp) if points else None
            route_rps.show(charts.RPS, per_route, "rps", span, caption=busiest)
            route_p95.show("ms", per_route, "p95", span, caption=busiest)
            backend_rps.show(charts.RPS, per_backend, "rps", span, caption=busiest)
            backend_p95.show("ms", per_backend, "p95", span, caption=busiest)
            routes_table.rows = route_rows(snapshot)
            backends_table.rows = backend_rows(snapshot)
            routes_table.update()
            backends_table.update()
            note.text = (
                "Every chart comes from the gateway's own 24 h history, whenever this UI "
                f"started, and every chart on this page has the same {format.step(history.step_s)} "
                "step, so the whole-gateway rate is the sum of the per-route ones. The tables "
                "are the gateway's figures for the last minute."
            )

        choice.on_value_change(refresh)
        ui.timer(max(settings.poll_interval_s, 2.0), refresh, immediate=True)


def parse_step(text: str) -> float:
    """``"10s"`` -> 10.0 (the steps of `RANGES`)."""
    return float(text.removesuffix("s"))
