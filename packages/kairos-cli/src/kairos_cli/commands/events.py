"""`kairos events`: follow the gateway's live events, one line each, until Ctrl-C."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import click
from kairos_client import GatewayEvent, KairosClient

from .._context import Settings, pass_settings, run
from ..errors import CliError, ExitStatus
from ..output import fmt_ms, fmt_ratio

__all__ = ["describe", "events"]

_SIGNS = {"added": "+", "changed": "~", "removed": "-"}


def _changes(changes: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{_SIGNS.get(c.get('change', ''), '?')} {c.get('route') or c.get('setting')}"
        for c in changes
    )


def _what(event: GatewayEvent) -> str:
    data = event.data
    kind = event.type
    if kind == "config.applied":
        who = f"by {data.get('actor')} ({data.get('trigger')})"
        if data.get("source"):
            who += f" from {data['source']}"
        return f"version {str(data.get('version'))[:12]} {who}: {_changes(data.get('changes', []))}"
    if kind == "config.reload_failed":
        errors = [e.get("path") or e.get("message") for e in data.get("errors", [])]
        detail = f" ({', '.join(str(e) for e in errors[:3])})" if errors else ""
        return f"{data.get('trigger')}: {data.get('error')}{detail}; the last good one serves"
    if kind == "config.reload_recovered":
        return f"{data.get('trigger')}: the configuration loads again"
    if kind == "backend.health":
        state = "healthy" if data.get("healthy") else f"unhealthy ({data.get('error')})"
        return f"{data.get('backend')} {state}"
    if kind == "backend.breaker":
        return f"{data.get('backend')} breaker {data.get('from')} -> {data.get('to')}"
    if kind == "backend.ejection":
        if data.get("ejected"):
            return (
                f"{data.get('backend')} ejected ({data.get('reason')}) "
                f"for {data.get('remaining_s')}s"
            )
        return f"{data.get('backend')} back in rotation"
    if kind == "metrics":
        rates = data.get("requests_per_second") or {}
        latency = data.get("latency_ms_1m") or {}
        return (
            f"{rates.get('last_10s', 0):.2f} req/s, {data.get('active_requests')} active, "
            f"p99 {fmt_ms(latency.get('p99'))} ms, {fmt_ratio(data.get('success_rate_1m'))} ok"
        )
    if kind == "lagged":
        return "this stream fell behind and was dropped by the gateway"
    if kind == "reset":
        return "events were missed; what you show may be stale"
    rest = {k: v for k, v in data.items() if k != "at"}
    return json.dumps(rest, ensure_ascii=False, separators=(",", ":"))


def describe(event: GatewayEvent) -> str:
    """One line: time (UTC), type, what happened."""
    at = (event.at or "").replace("T", " ").removesuffix("Z")
    return f"{at}  {event.type:<24} {_what(event)}".replace("\n", " ")


@click.command()
@click.option("--no-metrics", is_flag=True, help="Leave out the metrics tick (every second).")
@click.option(
    "--last-event-id", metavar="ID", help="Resume after this event (the gateway replays it)."
)
@pass_settings
def events(settings: Settings, no_metrics: bool, last_event_id: str | None) -> None:
    """Follow the gateway's live events: configuration applied (who, what), reloads that
    failed or recovered, backends changing health, breaker or ejection, and a metrics
    tick each second. One line per event (--json: one JSON object per line) until
    Ctrl-C; it stops with exit status 3 when the gateway ends the stream (shutdown)."""

    async def follow(client: KairosClient) -> None:
        async with client.events(last_event_id=last_event_id) as stream:
            async for event in stream:
                if no_metrics and event.type == "metrics":
                    continue
                if settings.json:
                    line = {"id": event.id, "type": event.type, "data": event.data}
                    click.echo(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
                else:
                    click.echo(describe(event))
            resume = f" (resume with --last-event-id {stream.last_event_id})"
        raise CliError(
            "the gateway ended the event stream" + (resume if stream.last_event_id else ""),
            ExitStatus.UNREACHABLE,
        )

    # Ctrl-C is how a follow ends: the connection is closed, nothing to report.
    with contextlib.suppress(KeyboardInterrupt):
        run(settings, follow)
