"""Dashboard (``/``): live totals, rates and latency, and the last hour as charts.

The cards and charts count routed (proxied) requests only; the admin tools' own traffic
(this UI polling, the CLI and SDK, probes, scrapes) and requests no route served are
shown apart, in a small panel, so an idle gateway looks idle.
"""

from __future__ import annotations

from kairos_client import KairosClientError
from kairos_core import MetricsSnapshot, TrafficSummary
from nicegui import ui

from .. import charts, format, live
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings
from ..widgets import ChartCard, Stat
from .backends import routes_down_text

__all__ = ["register"]

#: (key, caption, hint) of the cards, in display order.
CARDS: tuple[tuple[str, str, str], ...] = (
    ("total_requests", "Total requests", "routed requests since the gateway started"),
    ("requests_per_second", "Requests / s", "routed requests, over the last 10 s"),
    ("success_rate", "Success rate", "routed requests, status below 400, last minute"),
    ("p50", "Latency p50", "last minute"),
    ("p95", "Latency p95", "last minute"),
    ("p99", "Latency p99", "last minute"),
    ("active_requests", "Active requests", "in flight now"),
    ("client_errors", "4xx", "client errors since start"),
    ("server_errors", "5xx", "server errors since start"),
    ("uptime", "Uptime", "of the gateway process"),
    ("config_version", "Config version", "changes since start-up"),
)


def card_values(snapshot: MetricsSnapshot) -> dict[str, str]:
    """The text of every card for one snapshot."""
    latency = snapshot.latency_ms_1m
    return {
        "total_requests": format.count(snapshot.totals.requests),
        "requests_per_second": format.rate(snapshot.requests_per_second.last_10s),
        "success_rate": format.percent(snapshot.success_rate_1m),
        "p50": format.ms(latency.p50),
        "p95": format.ms(latency.p95),
        "p99": format.ms(latency.p99),
        "active_requests": format.count(snapshot.active_requests),
        "client_errors": format.count(snapshot.totals.client_errors),
        "server_errors": format.count(snapshot.totals.server_errors),
        "uptime": format.duration(snapshot.uptime_s),
        "config_version": str(snapshot.config_version),
    }


#: (key, caption, hint) of the rows of the panel for traffic kept out of the cards.
ASIDE: tuple[tuple[str, str, str], ...] = (
    (
        "admin",
        "Admin tools",
        "the management API (this UI, the CLI, the SDK) and /health, /ready, /live, /metrics",
    ),
    ("unmatched", "Unmatched", "requests no route served: 404, bad paths, ..."),
)
#: Columns of that panel: (key, header).
ASIDE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("requests", "requests"),
    ("rate", "req/s (10 s)"),
    ("errors", "4xx + 5xx"),
)


def aside_values(snapshot: MetricsSnapshot) -> dict[str, str]:
    """The text of every cell of the admin / unmatched panel (``"admin-rate"``, ...);
    dashes when the gateway does not report them."""
    out: dict[str, str] = {}
    for key, _, _ in ASIDE:
        part: TrafficSummary | None = getattr(snapshot, key)
        if part is None:
            out.update({f"{key}-{column}": format.DASH for column, _ in ASIDE_COLUMNS})
            continue
        out[f"{key}-requests"] = format.count(part.requests)
        out[f"{key}-rate"] = format.rate(part.requests_per_second.last_10s)
        out[f"{key}-errors"] = format.count(part.client_errors + part.server_errors)
    return out


def _aside_panel() -> dict[str, ui.label]:
    """The small panel; returns its value labels by ``aside_values`` key."""
    cells: dict[str, ui.label] = {}
    with ui.card().classes("gap-1 p-3").mark("aside-panel"):
        ui.label("Not counted above").classes("text-xs uppercase opacity-70")
        with ui.grid(columns=len(ASIDE_COLUMNS) + 1).classes("gap-x-6 gap-y-0 text-sm"):
            ui.label("")
            for _, header in ASIDE_COLUMNS:
                ui.label(header).classes("text-xs opacity-60 text-right")
            for key, caption, hint in ASIDE:
                ui.label(caption).tooltip(hint)
                for column, _ in ASIDE_COLUMNS:
                    marker = f"{key}-{column}"
                    cell = ui.label(format.DASH).classes("text-right").mark(marker)
                    cells[marker] = cell.props(f"data-testid={marker}")
    return cells


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/", title="Kairos · dashboard")
    def dashboard() -> None:
        with frame(settings, "/") as banner:
            ui.label("Dashboard").classes("text-2xl font-semibold")
            # Routes with no backend in rotation (hidden while there are none).
            down = ui.label("").classes("text-negative font-semibold").mark("routes-down")
            down.set_visibility(False)
            with ui.grid(columns="repeat(auto-fill, minmax(9.5rem, 1fr))").classes("w-full gap-3"):
                stats = {key: Stat(caption, key, hint) for key, caption, hint in CARDS}
            aside = _aside_panel()
            with ui.grid(columns="repeat(auto-fit, minmax(22rem, 1fr))").classes("w-full gap-3"):
                rps = ChartCard("Requests per second", "chart-rps", charts.requests_chart, [])
                errors = ChartCard("Error rate, 4xx + 5xx", "chart-errors", charts.errors_chart, [])
                latency = ChartCard("Latency", "chart-latency", charts.latency_chart, [])
            updated = ui.label("").classes("text-xs opacity-60")

        async def refresh() -> None:
            try:
                snapshot = await gateway.client.metrics()
                history = await gateway.client.metrics_history("1h", "10s")
                listing = await gateway.client.backends()
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            down.text = routes_down_text(listing.routes_down)
            down.set_visibility(bool(listing.routes_down))
            for key, text in card_values(snapshot).items():
                stats[key].set(text)
            for key, text in aside_values(snapshot).items():
                aside[key].text = text
            caption = f"last hour, {format.step(history.step_s)} steps"
            for card in (rps, errors, latency):
                card.show(history.points, caption=caption)
            updated.text = f"updated {snapshot.timestamp} · every {settings.poll_interval_s:g} s"

        ui.timer(settings.poll_interval_s, refresh, immediate=True)
        live.follow(gateway, on_config=refresh, on_backend=refresh)
