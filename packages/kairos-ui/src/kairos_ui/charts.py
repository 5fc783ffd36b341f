"""ECharts options built from the gateway's metrics history (pure data, no UI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kairos_core import HistoryPoint

__all__ = ["error_rate", "errors_chart", "latency_chart", "line_chart", "requests_chart"]

Series = tuple[str, list[list[Any]]]


def error_rate(point: HistoryPoint) -> float | None:
    """Share of the step's requests answered 4xx or 5xx, in percent (None: no requests)."""
    if point.requests <= 0:
        return None
    return round(100 * (point.client_errors + point.server_errors) / point.requests, 2)


def line_chart(title: str, unit: str, series: Sequence[Series]) -> dict[str, Any]:
    """A time-axis line chart; each series is (name, [[iso timestamp, value], ...])."""
    return {
        "animation": False,
        "title": {"text": f"{title} ({unit})" if unit else title, "textStyle": {"fontSize": 13}},
        "tooltip": {"trigger": "axis"},
        "legend": {"type": "scroll", "top": 24, "left": 8, "right": 8},
        "grid": {"left": 48, "right": 16, "top": 64, "bottom": 28},
        "xAxis": {"type": "time", "axisLabel": {"hideOverlap": True}},
        "yAxis": {"type": "value", "min": 0},
        "series": [
            {"name": name, "type": "line", "showSymbol": False, "connectNulls": False, "data": data}
            for name, data in series
        ],
    }


def requests_chart(points: Sequence[HistoryPoint]) -> dict[str, Any]:
    data = [[p.timestamp, p.requests_per_second] for p in points]
    return line_chart("Requests per second", "", [("req/s", data)])


def errors_chart(points: Sequence[HistoryPoint]) -> dict[str, Any]:
    data = [[p.timestamp, error_rate(p)] for p in points]
    return line_chart("Error rate, 4xx + 5xx", "%", [("errors", data)])


def latency_chart(points: Sequence[HistoryPoint]) -> dict[str, Any]:
    series: list[Series] = [
        (name, [[p.timestamp, getattr(p.latency_ms, name)] for p in points])
        for name in ("p50", "p95", "p99")
    ]
    return line_chart("Latency", "ms", series)
