"""Backends & health (``/backends``): per backend health, breaker, load and latency,
and the gateway's own ``/health``, ``/ready`` and ``/live``."""

from __future__ import annotations

from typing import Any

from kairos_client import KairosClientError
from kairos_core import BackendList, HealthStatus, LiveStatus, ReadyStatus
from nicegui import ui

from .. import format
from ..gateway import Gateway, describe
from ..layout import frame
from ..settings import UiSettings

__all__ = ["backend_rows", "register"]

COLUMNS: list[dict[str, Any]] = [
    {"name": "address", "label": "Backend", "field": "address", "align": "left", "sortable": True},
    {"name": "state", "label": "State", "field": "state", "align": "left", "sortable": True},
    {"name": "health", "label": "Health check", "field": "health", "align": "left"},
    {"name": "breaker", "label": "Breaker", "field": "breaker", "align": "left", "sortable": True},
    {"name": "inflight", "label": "In flight", "field": "inflight", "sortable": True},
    {"name": "latency", "label": "Latency (EWMA)", "field": "latency", "sortable": True},
    {"name": "routes", "label": "Routes", "field": "routes", "align": "left"},
]


def backend_rows(backends: BackendList) -> list[dict[str, Any]]:
    """One table row per backend address."""
    rows = []
    for b in backends.backends:
        check = b.health_check
        if check.path is None:
            health = "no active check"
        elif check.last_error:
            health = f"{check.path}: {check.last_error} ({check.consecutive_fail} failed)"
        else:
            health = f"{check.path}: ok ({check.consecutive_ok} in a row)"
        breaker = b.circuit_breaker.state.replace("_", "-")
        if b.circuit_breaker.state == "open":
            breaker += f" (retry in {b.circuit_breaker.retry_after_s:.0f} s)"
        rows.append(
            {
                "address": b.address,
                "state": "available" if b.available else ("unhealthy" if not b.healthy else "out"),
                "health": health,
                "breaker": breaker,
                "inflight": b.inflight,
                "latency": format.ms(b.ewma_latency_ms),
                "routes": ", ".join(b.routes),
            }
        )
    return rows


def _probe_card(title: str) -> tuple[ui.icon, ui.label]:
    with ui.card().classes("min-w-48 flex-1 p-3"), ui.row().classes("items-center gap-2"):
        icon = ui.icon("help_outline", size="2rem", color="grey")
        with ui.column().classes("gap-0"):
            ui.label(title).classes("font-semibold")
            label = ui.label(format.DASH).classes("text-sm").mark(f"probe-{title.strip('/')}")
    return icon, label


def _set_probe(probe: tuple[ui.icon, ui.label], ok: bool | None, text: str) -> None:
    icon, label = probe
    icon.name = "check_circle" if ok else ("error" if ok is False else "help_outline")
    icon.props(f"color={'positive' if ok else ('negative' if ok is False else 'grey')}")
    label.text = text


def _health_text(health: HealthStatus) -> str:
    return (
        f"{health.status} · v{health.version} · up {format.duration(health.uptime_s)} · "
        f"{health.routes} routes"
    )


def _ready_text(ready: ReadyStatus) -> str:
    b = ready.backends
    text = ready.status.replace("_", " ")
    if ready.reason:
        text += f" ({ready.reason})"
    return f"{text} · {b.available}/{b.total} backends available, {b.circuit_open} breakers open"


def _live_text(live: LiveStatus) -> str:
    return live.status


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/backends", title="Kairos · backends")
    def backends_page() -> None:
        with frame(settings, "/backends") as banner:
            ui.label("Backends & health").classes("text-2xl font-semibold")
            with ui.row().classes("w-full gap-3"):
                health = _probe_card("/health")
                ready = _probe_card("/ready")
                live = _probe_card("/live")
            table = ui.table(columns=COLUMNS, rows=[], row_key="address").classes("w-full")
            table.props("flat bordered no-data-label='No backends configured'")
            table.mark("backends-table")

        async def refresh() -> None:
            client = gateway.client
            try:
                listing = await client.backends()
                h, r, lv = await client.health(), await client.ready(), await client.live()
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                for probe in (health, ready, live):
                    _set_probe(probe, False, "no answer")
                return
            banner.clear()
            _set_probe(health, True, _health_text(h))
            _set_probe(ready, r.ready, _ready_text(r))
            _set_probe(live, True, _live_text(lv))
            table.rows = backend_rows(listing)
            table.update()

        ui.timer(settings.poll_interval_s, refresh, immediate=True)
