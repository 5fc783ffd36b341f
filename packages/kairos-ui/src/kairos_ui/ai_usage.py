"""The AI gateway's usage report (`GET /api/ai/usage`) shaped for the Metrics page:
per-minute series, the busiest consumers, table rows and chart options (pure data, no
UI; the section itself is `pages.ai_section`).

The gateway keeps only the minutes in which something happened; a minute it does not
list had no tokens, errors or fallbacks, so the series fill it with 0 and every chart
has one point per minute of the last hour, on one time axis.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kairos_core.ai import AiTargetStatus, AiUsageMinute, AiUsageReport, AiUsageRow

from . import charts, format

__all__ = [
    "ESTIMATED",
    "OTHER",
    "TOKENS_PER_MIN",
    "WINDOW_MINUTES",
    "cost",
    "has_ai_route",
    "iso_time",
    "minute_axis",
    "minute_chart",
    "problem_series",
    "target_rows",
    "token_series",
    "top_names",
    "usage_rows",
]

Series = tuple[str, list[list[Any]]]

#: The unit of every token chart.
TOKENS_PER_MIN = "tokens/min"
#: Minutes shown: the gateway keeps the last hour.
WINDOW_MINUTES = 60
#: Consumers past the busiest few are summed under this name (the gateway's own name
#: for consumers past its limit, so both mean "everyone else").
OTHER = "other"
#: Put before a token count the gateway estimated, in part or in whole.
ESTIMATED = "\u2248"


def has_ai_route(report: AiUsageReport) -> bool:
    """Whether the gateway has (or had since it started) a route with the ai plugin:
    a gateway without one answers an empty report."""
    return bool(report.usage or report.minutes or report.targets)


def iso_time(epoch: int) -> str:
    """A POSIX time as the ISO 8601 UTC text the page's time axes take."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def minute_axis(
    minutes: Sequence[AiUsageMinute], now: float, window: int = WINDOW_MINUTES
) -> list[int]:
    """The starts (POSIX seconds) of the ``window`` minutes ending with the current
    one, or with the gateway's latest minute when its clock is ahead of ours. Empty
    when none of ``minutes`` falls in that window (nothing to draw)."""
    last = int(now // 60) * 60
    if minutes:
        last = max(last, max(m.minute for m in minutes))
    axis = [last - 60 * i for i in range(window - 1, -1, -1)]
    if not any(axis[0] <= m.minute <= last for m in minutes):
        return []
    return axis


def top_names(totals: Mapping[str, int], limit: int) -> list[str]:
    """The ``limit`` names with the most tokens, most first (ties by name)."""
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:limit]]


def token_series(
    minutes: Sequence[AiUsageMinute],
    axis: Sequence[int],
    by: str,
    limit: int | None = None,
) -> list[Series]:
    """Tokens per minute on ``axis``, one series per model (``by="model"``) or consumer
    (``by="consumer"``). With ``limit``, the busiest ``limit`` names of the window keep
    their own series and the others are summed as `OTHER`, last."""
    in_window = {m.minute: m for m in minutes if axis and axis[0] <= m.minute <= axis[-1]}

    def tokens_of(m: AiUsageMinute) -> dict[str, int]:
        return m.tokens_by_model if by == "model" else m.tokens_by_consumer

    totals: dict[str, int] = {}
    for m in in_window.values():
        for name, count in tokens_of(m).items():
            totals[name] = totals.get(name, 0) + count
    names = top_names(totals, len(totals) if limit is None else limit)
    kept = set(names)
    if len(kept) < len(totals) and OTHER not in kept:
        names.append(OTHER)
    series: dict[str, list[list[Any]]] = {name: [] for name in names}
    for start in axis:
        found = in_window.get(start)
        counts: dict[str, int] = {}
        for name, count in (tokens_of(found) if found is not None else {}).items():
            bucket = name if name in kept else OTHER
            counts[bucket] = counts.get(bucket, 0) + count
        for name in names:
            series[name].append([iso_time(start), counts.get(name, 0)])
    return list(series.items())


def problem_series(minutes: Sequence[AiUsageMinute], axis: Sequence[int]) -> list[Series]:
    """Errors and fallbacks per minute on ``axis``."""
    by_start = {m.minute: m for m in minutes}
    out: list[Series] = []
    for name in ("errors", "fallbacks"):
        data: list[list[Any]] = []
        for start in axis:
            found = by_start.get(start)
            data.append([iso_time(start), 0 if found is None else getattr(found, name)])
        out.append((name, data))
    return out


def cost(value: float) -> str:
    """A cost in the configured unit, without trailing zeros (``0.00015``)."""
    text = f"{value:,.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _tokens(count: int, estimated: bool) -> str:
    return f"{ESTIMATED} {format.count(count)}" if estimated else format.count(count)


def usage_rows(usage: Sequence[AiUsageRow]) -> list[dict[str, Any]]:
    """The totals table: one row per route, consumer, provider and model; token counts
    of a row with estimated tokens are marked `ESTIMATED`."""
    rows = []
    for r in usage:
        estimated = r.estimated_tokens > 0
        rows.append(
            {
                "key": f"{r.route}\n{r.consumer}\n{r.provider}\n{r.model}",
                "route": r.route,
                "consumer": r.consumer,
                "provider": r.provider,
                "model": r.model,
                "requests": r.requests,
                "errors": r.errors,
                "fallbacks": r.fallbacks,
                "prompt_tokens": _tokens(r.prompt_tokens, estimated),
                "completion_tokens": _tokens(r.completion_tokens, estimated),
                "estimated_tokens": r.estimated_tokens,
                "cost": cost(r.cost),
            }
        )
    return rows


def target_rows(targets: Sequence[AiTargetStatus]) -> list[dict[str, Any]]:
    """The targets table: breaker state, calls in flight, latency to the response head."""
    return [
        {
            "target": t.target,
            "breaker": t.breaker.replace("_", "-"),
            "inflight": t.inflight,
            "latency": format.ms(t.latency_ms),
        }
        for t in targets
    ]


def minute_chart(
    unit: str,
    series: Sequence[Series],
    axis: Sequence[int] = (),
    *,
    stacked: bool = True,
    dark: bool = False,
) -> dict[str, Any]:
    """A bar chart per minute in ``unit`` (one bar a minute; ``stacked``: the series of
    a minute on top of each other, so a bar's height is the minute's total). The time
    axis spans ``axis`` (`minute_axis`) and half a minute more on each side, so the
    first and last bars are drawn whole."""
    span = (iso_time(axis[0] - 30), iso_time(axis[-1] + 30)) if axis else None
    return charts.time_chart(
        unit, series, kind="bar", stacked=stacked, dark=dark, span=span, whole_numbers=True
    )
