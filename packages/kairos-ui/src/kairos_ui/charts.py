"""ECharts options built from the gateway's metrics history (pure data, no UI).

Every chart has its unit on the y axis and in the tooltip, its legend below the plot
(scrolling, long names shortened with the full name on hover), and colours for the
page's mode: ``dark=True`` gives light text and faint grid lines. The title and the
step are not drawn by ECharts but by the card around the chart (`widgets.ChartCard`),
as page text, so they follow dark mode and never collide with the legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kairos_core import HistoryPoint

__all__ = [
    "RPS",
    "Series",
    "error_rate",
    "errors_chart",
    "latency_chart",
    "line_chart",
    "requests_chart",
]

Series = tuple[str, list[list[Any]]]
#: The unit of request rates, on every chart that shows one.
RPS = "req/s"

#: Series colours, clear on a white and on a near-black background alike (ECharts'
#: default palette has dim ones that vanish in dark mode).
PALETTE = (
    "#3b82f6", "#22c55e", "#f59e0b", "#ef4444", "#06b6d4",
    "#a855f7", "#ec4899", "#84cc16", "#f97316", "#14b8a6",
)  # fmt: skip
#: (text, axis lines, grid lines) per mode.
_LIGHT = ("#4b5563", "#9ca3af", "#e5e7eb")
_DARK = ("#c9d1d9", "#6b7280", "rgba(255, 255, 255, 0.08)")


def error_rate(point: HistoryPoint) -> float | None:
    """Share of the step's requests answered 4xx or 5xx, in percent (None: no requests)."""
    if point.requests <= 0:
        return None
    return round(100 * (point.client_errors + point.server_errors) / point.requests, 2)


def time_chart(
    unit: str,
    series: Sequence[Series],
    *,
    kind: str = "line",
    dark: bool = False,
    span: tuple[str, str] | None = None,
    stacked: bool = False,
    whole_numbers: bool = False,
) -> dict[str, Any]:
    """A time-axis chart in ``unit``; each series is (name, [[iso time, value], ...]),
    drawn as ``kind`` (``line`` or ``bar``; ``stacked`` bars add up).

    ``span`` (first, last time) fixes the time axis, so charts of one page line up
    even where a series has few points; a line series of one or two points shows them
    as dots, since a line needs two. ``whole_numbers``: no fractional ticks (counts)."""
    text, axis, grid = _DARK if dark else _LIGHT
    legend = len(series) > 1
    shape: dict[str, Any] = (
        {"type": "bar", "barMaxWidth": 14, **({"stack": "total"} if stacked else {})}
        if kind == "bar"
        else {"type": "line", "connectNulls": False}
    )
    return {
        "animation": False,
        "backgroundColor": "transparent",
        "color": list(PALETTE),
        "textStyle": {"color": text},
        "tooltip": {
            "trigger": "axis",
            # A JavaScript function (NiceGUI evaluates keys starting with ":").
            ":valueFormatter": f"v => v == null ? '\u2013' : `${{v}} {unit}`",
        },
        "legend": {
            "show": legend,
            "type": "scroll",
            "bottom": 0,
            "left": 8,
            "right": 8,
            "textStyle": {"color": text, "width": 180, "overflow": "truncate"},
            "tooltip": {"show": True},  # the full name of a shortened entry
            "pageTextStyle": {"color": text},
            "pageIconColor": text,
            "pageIconInactiveColor": axis,
        },
        "grid": {
            "left": 8,
            "right": 32,  # room for the last time label
            "top": 28,
            "bottom": 36 if legend else 8,
            "containLabel": True,
        },
        "xAxis": {
            "type": "time",
            **({"min": span[0], "max": span[1]} if span else {}),
            "axisLabel": {"hideOverlap": True, "color": text},
            "axisLine": {"lineStyle": {"color": axis}},
            "splitLine": {"show": False},
        },
        "yAxis": {
            "type": "value",
            "min": 0,
            **({"minInterval": 1} if whole_numbers else {}),
            "name": unit,
            "nameTextStyle": {"color": text, "align": "left"},
            "axisLabel": {"color": text},
            "splitLine": {"lineStyle": {"color": grid}},
        },
        "series": [
            {
                "name": name,
                **shape,
                **({"showSymbol": len(data) <= 2} if kind == "line" else {}),
                "data": data,
            }
            for name, data in series
        ],
    }


def line_chart(
    unit: str,
    series: Sequence[Series],
    *,
    dark: bool = False,
    span: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A time-axis line chart in ``unit`` (see `time_chart`)."""
    return time_chart(unit, series, dark=dark, span=span)


def requests_chart(points: Sequence[HistoryPoint], *, dark: bool = False) -> dict[str, Any]:
    data = [[p.timestamp, p.requests_per_second] for p in points]
    return line_chart(RPS, [(RPS, data)], dark=dark)


def errors_chart(points: Sequence[HistoryPoint], *, dark: bool = False) -> dict[str, Any]:
    data = [[p.timestamp, error_rate(p)] for p in points]
    return line_chart("%", [("errors", data)], dark=dark)


def latency_chart(points: Sequence[HistoryPoint], *, dark: bool = False) -> dict[str, Any]:
    series: list[Series] = [
        (name, [[p.timestamp, getattr(p.latency_ms, name)] for p in points])
        for name in ("p50", "p95", "p99")
    ]
    return line_chart("ms", series, dark=dark)
