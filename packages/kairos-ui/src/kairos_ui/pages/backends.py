"""Backends & health (``/backends``): per backend health, breaker, connections, ejection (outlier
detection), load and latency, the routes left with no backend, and the gateway's own
``/health``, ``/ready`` and ``/live``."""

from __future__ import annotations

from typing import Any

from kairos_client import KairosClientError
from kairos_core import (
    BackendConnections,
    BackendEjection,
    BackendList,
    HealthStatus,
    LiveStatus,
    ReadyStatus,
)
from kairos_core.api import EJECTION_REASON_TEXT
from nicegui import ui

from .. import format
from ..gateway import Gateway, describe
from ..layout import frame
from ..live import follow
from ..settings import UiSettings

__all__ = ["backend_rows", "connections_text", "ejection_text", "register", "routes_down_text"]

COLUMNS: list[dict[str, Any]] = [
    {"name": "address", "label": "Backend", "field": "address", "align": "left", "sortable": True},
    {"name": "state", "label": "State", "field": "state", "align": "left", "sortable": True},
    {"name": "health", "label": "Health check", "field": "health", "align": "left"},
    {"name": "breaker", "label": "Breaker", "field": "breaker", "align": "left", "sortable": True},
    {"name": "ejection", "label": "Ejection", "field": "ejection", "align": "left"},
    {"name": "inflight", "label": "In flight", "field": "inflight", "sortable": True},
    {"name": "connections", "label": "Connections", "field": "connections", "align": "left"},
    {"name": "latency", "label": "Latency (EWMA)", "field": "latency", "sortable": True},
    {"name": "routes", "label": "Routes", "field": "routes", "align": "left"},
]


#: Long cells (a health-check error, many routes) wrap within a bounded width, cut at
#: two lines, with the whole text on hover: the table never scrolls sideways for them.
_LONG_SLOT = r"""
<q-td :props="props">
  <div style="max-width: 18rem; white-space: normal; overflow-wrap: anywhere;
              display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
              overflow: hidden">{{ props.value }}</div>
  <q-tooltip v-if="props.value && props.value.length > 40" max-width="30rem">
    {{ props.value }}
  </q-tooltip>
</q-td>
"""

#: The state column as a badge: red when the backend is out of rotation.
_STATE_SLOT = r"""
<q-td :props="props">
  <q-badge :color="props.row.available ? 'positive' : 'negative'" :label="props.value" />
</q-td>
"""


def ejection_text(ejection: BackendEjection | None) -> str:
    """Outlier detection in words: why a backend is out, and for how long."""
    if ejection is None or not (ejection.ejected or ejection.probation):
        return format.DASH
    reason = EJECTION_REASON_TEXT.get(ejection.reason or "", "failing")
    if ejection.ejected:
        return f"ejected: {reason} · back in {format.duration(ejection.remaining_s)}"
    return f"on probation after: {reason}"


def connections_text(connections: BackendConnections | None) -> str:
    """Upstream connections in words: busy and idle of the limit, waiting, refused."""
    if connections is None:
        return format.DASH
    text = f"{connections.busy} busy, {connections.idle} idle of {connections.max_connections}"
    if connections.pending:
        text += f" · {connections.pending} waiting"
    if connections.saturated_total:
        text += f" · {connections.saturated_total} refused"
    return text


def routes_down_text(routes: list[str]) -> str:
    return "No backend in rotation (requests get 503): " + ", ".join(routes) if routes else ""


def _state(b: Any) -> str:
    if b.available:
        return "available"
    if not b.healthy:
        return "unhealthy"
    if b.ejection is not None and b.ejection.ejected:
        return "ejected"
    return "breaker open"


def backend_rows(backends: BackendList) -> list[dict[str, Any]]:
    """One table row per backend address."""
    rows = []
    for b in backends.backends:
        check = b.health_check
        if check.path is None:
            health = "no active check"
        elif check.last_error:
            error = format.error_text(check.last_error)
            health = f"{check.path}: {error} ({check.consecutive_fail} failed)"
        else:
            health = f"{check.path}: ok ({check.consecutive_ok} in a row)"
        breaker = b.circuit_breaker.state.replace("_", "-")
        if b.circuit_breaker.state == "open":
            breaker += f" (retry in {b.circuit_breaker.retry_after_s:.0f} s)"
        rows.append(
            {
                "address": b.address,
                "state": _state(b),
                "available": b.available,
                "health": health,
                "breaker": breaker,
                "ejection": ejection_text(b.ejection),
                "inflight": b.inflight,
                "connections": connections_text(b.connections),
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
            down = ui.label("").classes("text-negative font-semibold").mark("routes-down")
            down.set_visibility(False)
            table = ui.table(columns=COLUMNS, rows=[], row_key="address").classes("w-full")
            table.props("flat bordered no-data-label='No backends configured'")
            table.add_slot("body-cell-state", _STATE_SLOT)
            for column in ("health", "ejection", "connections", "routes"):
                table.add_slot(f"body-cell-{column}", _LONG_SLOT)
            table.props("wrap-cells")
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
            down.text = routes_down_text(listing.routes_down)
            down.set_visibility(bool(listing.routes_down))

        ui.timer(settings.poll_interval_s, refresh, immediate=True)
        follow(gateway, on_config=refresh, on_backend=refresh)
