"""`kairos ai usage`: what the AI gateway (the ai plugin) has used and how its targets are."""

from __future__ import annotations

import click

from .._context import Settings, pass_settings, run
from ..output import console, echo_json, table

__all__ = ["ai"]


@click.group()
def ai() -> None:
    """The AI gateway (the ai plugin): token usage, cost, targets."""


@ai.command("usage")
@click.option("--consumer", help="Only this consumer (as shown in the consumer column).")
@click.option("--model", help="Only this model (the name clients use, or a provider's).")
@pass_settings
def usage(settings: Settings, consumer: str | None, model: str | None) -> None:
    """Tokens, cost, errors and fallbacks per route, consumer, provider and model, then
    each target's breaker and latency."""
    report = run(settings, lambda client: client.ai_usage())
    rows = [
        r
        for r in report.usage
        if (consumer is None or r.consumer == consumer) and (model is None or r.model == model)
    ]
    if settings.json:
        echo_json(report.model_copy(update={"usage": rows}))
        return
    if not report.usage and not report.targets:
        console().print("no AI usage yet (no route enables the ai plugin, or no call was made)")
        return
    columns = [
        "route",
        "consumer",
        "provider",
        "model",
        "requests",
        "errors",
        "fallbacks",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    ]
    out = table("AI usage", columns)
    for row in rows:
        cells = [str(getattr(row, name)) for name in columns]
        if row.estimated_tokens:
            cells[7] += "~"  # part of the tokens were estimated by the gateway
        out.add_row(*cells)
    console().print(out)
    if any(r.estimated_tokens for r in rows):
        console().print("~ includes tokens the gateway estimated (the provider reported none)")
    targets = table("Targets", ["target", "breaker", "in flight", "latency ms"])
    for t in report.targets:
        latency = "-" if t.latency_ms is None else f"{t.latency_ms:.1f}"
        targets.add_row(t.target, t.breaker, str(t.inflight), latency)
    console().print(targets)
