"""Dashboard (``/``): live totals, rates and latency, and the last hour as charts."""

from __future__ import annotations

from kairos_client import KairosClientError
from kairos_core import MetricsHistory, MetricsSnapshot
from nicegui import ui

from .. import charts, format
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings
from ..widgets import Stat, chart, set_chart

__all__ = ["register"]

#: (key, caption, hint) of the cards, in display order.
CARDS: tuple[tuple[str, str, str], ...] = (
    ("total_requests", "Total requests", "since the gateway started"),
    ("requests_per_second", "Requests / s", "over the last 10 s"),
    ("success_rate", "Success rate", "status below 400, last minute"),
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


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/", title="Kairos · dashboard")
    def dashboard() -> None:
        with frame(settings, "/") as banner:
            ui.label("Dashboard").classes("text-2xl font-semibold")
            with ui.grid(columns="repeat(auto-fill, minmax(9.5rem, 1fr))").classes("w-full gap-3"):
                stats = {key: Stat(caption, key, hint) for key, caption, hint in CARDS}
            empty = MetricsHistory(range_s=3600, step_s=10, points=[])
            with ui.grid(columns="repeat(auto-fit, minmax(22rem, 1fr))").classes("w-full gap-3"):
                with ui.card().classes("p-2"):
                    rps = chart(charts.requests_chart(empty.points), "chart-rps")
                with ui.card().classes("p-2"):
                    errors = chart(charts.errors_chart(empty.points), "chart-errors")
                with ui.card().classes("p-2"):
                    latency = chart(charts.latency_chart(empty.points), "chart-latency")
            updated = ui.label("").classes("text-xs opacity-60")

        async def refresh() -> None:
            try:
                snapshot = await gateway.client.metrics()
                history = await gateway.client.metrics_history("1h", "10s")
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            for key, text in card_values(snapshot).items():
                stats[key].set(text)
            set_chart(rps, charts.requests_chart(history.points))
            set_chart(errors, charts.errors_chart(history.points))
            set_chart(latency, charts.latency_chart(history.points))
            updated.text = f"updated {snapshot.timestamp} · every {settings.poll_interval_s:g} s"

        ui.timer(settings.poll_interval_s, refresh, immediate=True)
