"""The Metrics page's *AI gateway* section: tokens per minute by model and by consumer,
errors and fallbacks per minute over the last hour, the totals per route, consumer,
provider and model, and each target's breaker and latency (`GET /api/ai/usage`).

The section polls on the page's interval, on its own, so the page only places it. A
gateway without an AI route gets one muted line instead of empty charts. Errors go to
the page's banner like every other section's, except a gateway that has no such
endpoint (older than the plugin), which is said in the section.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kairos_client import KairosClientError, NotFound
from kairos_core.ai import AiUsageReport
from nicegui import app, ui

from .. import ai_usage
from ..gateway import Gateway, describe
from ..layout import Banner
from ..settings import UiSettings

__all__ = ["NO_AI_ROUTE", "TOP_CONSUMERS", "ai_section"]

#: Consumers drawn one by one on the consumer chart; the others are summed as "other".
TOP_CONSUMERS = 8

NO_AI_ROUTE = "No AI route: enable the ai plugin on a route to see token usage here."
NO_CALLS = "No AI calls in the last hour."
STEP = "1 min steps · last hour"

USAGE_COLUMNS: list[dict[str, Any]] = [
    {"name": "route", "label": "Route", "field": "route", "align": "left", "sortable": True},
    {"name": "consumer", "label": "Consumer", "field": "consumer", "align": "left"},
    {"name": "provider", "label": "Provider", "field": "provider", "align": "left"},
    {"name": "model", "label": "Model", "field": "model", "align": "left", "sortable": True},
    {"name": "requests", "label": "Requests", "field": "requests", "sortable": True},
    {"name": "errors", "label": "Errors", "field": "errors", "sortable": True},
    {"name": "fallbacks", "label": "Fallbacks", "field": "fallbacks", "sortable": True},
    {"name": "prompt", "label": "Prompt tokens", "field": "prompt_tokens"},
    {"name": "completion", "label": "Completion tokens", "field": "completion_tokens"},
    {"name": "cost", "label": "Cost", "field": "cost"},
]
TARGET_COLUMNS: list[dict[str, Any]] = [
    {"name": "target", "label": "Target", "field": "target", "align": "left"},
    {"name": "breaker", "label": "Breaker", "field": "breaker", "align": "left"},
    {"name": "inflight", "label": "In flight", "field": "inflight"},
    {"name": "latency", "label": "Latency to first byte", "field": "latency"},
]


def _mode_store() -> Mapping[str, Any]:
    """This browser's user storage, where the header's toggle keeps dark mode. Taken
    while the page is built: the refresh timer runs outside the page's request, where
    ``app.storage.user`` cannot be looked up."""
    try:
        return app.storage.user
    except RuntimeError:  # no user storage (outside a page): always light
        return {}


def _chart_card(title: str, marker: str) -> ui.echart:
    """A card with a title, the step, and a chart; the titles are page text so they
    follow dark mode."""
    with ui.card().classes("p-2 gap-0"):
        with ui.row().classes("w-full items-baseline gap-2 px-2 no-wrap"):
            ui.label(title).classes("text-sm font-semibold")
            ui.space()
            ui.label(STEP).classes("text-xs opacity-70 text-right")
        return ui.echart(ai_usage.minute_chart("", [])).classes("w-full h-64").mark(marker)


def _draw(element: ui.echart, options: dict[str, Any]) -> None:
    element.options.clear()
    element.options.update(options)
    element.update()


def _table(columns: list[dict[str, Any]], key: str, marker: str) -> ui.table:
    table = ui.table(columns=columns, rows=[], row_key=key)
    table.classes("w-full").props("flat bordered dense").mark(marker)
    return table


def ai_section(settings: UiSettings, gateway: Gateway, banner: Banner) -> None:
    """Build the section where it is called (inside the page's frame) and poll."""
    ui.label("AI gateway").classes("text-lg font-semibold")
    none = ui.label(NO_AI_ROUTE).classes("text-sm opacity-60").mark("ai-none")
    none.visible = False
    with ui.row().classes("w-full items-center gap-2 p-3 rounded bg-red-100 text-red-900") as fault:
        ui.icon("error_outline")
        fault_text = ui.label("").mark("ai-error")
    fault.visible = False
    with ui.column().classes("w-full gap-3 p-0") as body:
        idle = ui.label(NO_CALLS).classes("text-sm opacity-60").mark("ai-idle")
        grid = "repeat(auto-fit, minmax(26rem, 1fr))"
        with ui.grid(columns=grid).classes("w-full gap-3") as chart_grid:
            by_model = _chart_card("Tokens by requested model", "ai-tokens-model")
            by_consumer = _chart_card(
                f"Tokens by consumer (the {TOP_CONSUMERS} busiest)", "ai-tokens-consumer"
            )
            problems = _chart_card("Errors and fallbacks", "ai-problems")
        usage = _table(USAGE_COLUMNS, "key", "ai-usage-table")
        ui.label(
            "Totals since the gateway started. "
            f"{ai_usage.ESTIMATED}: the provider reported no usage for some of these "
            "calls, so the gateway estimated their tokens. Cost is in the unit of the "
            "route's costs setting."
        ).classes("text-xs opacity-60")
        targets = _table(TARGET_COLUMNS, "target", "ai-target-table")
    body.visible = False
    mode = _mode_store()

    def show(report: AiUsageReport) -> None:
        present = ai_usage.has_ai_route(report)
        none.visible = not present
        body.visible = present
        if not present:
            return
        dark = bool(mode.get("dark_mode"))
        minutes = report.minutes
        axis = ai_usage.minute_axis(minutes, time.time())
        idle.visible = not axis
        chart_grid.visible = bool(axis)
        per_min = ai_usage.TOKENS_PER_MIN
        models = ai_usage.token_series(minutes, axis, "model")
        consumers = ai_usage.token_series(minutes, axis, "consumer", TOP_CONSUMERS)
        problem = ai_usage.problem_series(minutes, axis)
        _draw(by_model, ai_usage.minute_chart(per_min, models, axis, dark=dark))
        _draw(by_consumer, ai_usage.minute_chart(per_min, consumers, axis, dark=dark))
        _draw(problems, ai_usage.minute_chart("per min", problem, axis, stacked=False, dark=dark))
        usage.rows = ai_usage.usage_rows(report.usage)
        targets.rows = ai_usage.target_rows(report.targets)
        usage.update()
        targets.update()

    async def refresh() -> None:
        try:
            report = await gateway.client.ai_usage()
        except NotFound:
            fault_text.text = (
                f"The gateway at {gateway.url} has no AI usage endpoint "
                "(GET /api/ai/usage): it is older than the ai plugin."
            )
            fault.visible = True
            return
        except KairosClientError as exc:
            banner.show(describe(exc, gateway.url))  # as every section of the page
            return
        fault.visible = False
        show(report)

    ui.timer(max(settings.poll_interval_s, 2.0), refresh, immediate=True)
