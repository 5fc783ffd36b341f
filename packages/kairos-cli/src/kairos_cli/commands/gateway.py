"""`kairos status`, `health`, `reload` and `backends`: the gateway as a whole."""

from __future__ import annotations

import asyncio

import click
from kairos_client import KairosClient
from kairos_core import (
    BackendConnections,
    BackendEjection,
    BackendList,
    ConfigStatus,
    HealthStatus,
    ReadyStatus,
)
from kairos_core.api import EJECTION_REASON_TEXT
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..errors import field_lines
from ..output import console, dump, echo_json, fmt_duration, fmt_ms, key_values, table, yes_no

__all__ = ["backends", "health", "reload", "status"]


def _config_rows(config: ConfigStatus) -> list[tuple[str, str]]:
    rows = [
        ("Config", f"version {config.config_version}, ETag {config.etag}"),
        ("Loaded", config.loaded_at),
        ("File", escape(config.source_path or "none (changes are not saved)")),
    ]
    if config.file_changed_on_disk:
        rows.append(("", "[yellow]changed on disk since loaded: run `kairos reload`[/]"))
    watcher = "running" if config.watcher_running else "stopped"
    rows.append(("Hot reload", f"{'on' if config.hot_reload else 'off'} (file watcher {watcher})"))
    last = config.last_reload
    if last is not None:
        outcome = "[green]ok[/]" if last.ok else f"[red]failed[/]: {escape(last.error or '')}"
        rows.append(("Last reload", f"{outcome} ({last.trigger}, {last.at})"))
        rows += [("", escape(line)) for line in field_lines(last.errors)]
    return rows


@click.command()
@pass_settings
def status(settings: Settings) -> None:
    """Health, readiness, configuration status and a backend summary."""

    async def work(client: KairosClient) -> tuple[HealthStatus, ReadyStatus, ConfigStatus]:
        return await asyncio.gather(client.health(), client.ready(), client.config_status())

    health_, ready, config = run(settings, work)
    if settings.json:
        echo_json({"health": dump(health_), "ready": dump(ready), "config": dump(config)})
        return
    summary = ready.backends
    readiness = "[green]ready[/]" if ready.ready else f"[yellow]not ready[/] ({ready.reason})"
    rows = [
        ("Gateway", f"{settings.url}  {_health_word(health_)}  version {health_.version}"),
        ("Uptime", fmt_duration(health_.uptime_s)),
        ("Ready", readiness),
        *_config_rows(config),
        ("Routes", str(config.routes)),
        (
            "Backends",
            f"{summary.total} total, {summary.available} available, "
            f"{summary.unhealthy} unhealthy, {summary.circuit_open} circuit open, "
            f"{summary.ejected} ejected",
        ),
    ]
    if health_.routes_down:
        rows.append(("Routes down", f"[red]{escape(', '.join(health_.routes_down))}[/]"))
    console().print(key_values(rows))


@click.command()
@pass_settings
def health(settings: Settings) -> None:
    """Is the gateway up? (GET /health, open without a token)."""
    result = run(settings, lambda client: client.health())
    if settings.json:
        echo_json(result)
        return
    console().print(
        f"{_health_word(result)}: version {result.version}, up {fmt_duration(result.uptime_s)}, "
        f"config version {result.config_version}, {result.routes} routes"
    )
    if result.routes_down:
        console().print(_routes_down(result.routes_down))


def _health_word(health_: HealthStatus) -> str:
    return f"[green]{health_.status}[/]" if health_.status == "healthy" else "[yellow]degraded[/]"


def _routes_down(routes: list[str]) -> str:
    return f"[red]no backend in rotation[/] (503) for: {escape(', '.join(routes))}"


def _ejection_text(ejection: BackendEjection | None) -> str:
    if ejection is None or not (ejection.ejected or ejection.probation):
        return "-"
    reason = EJECTION_REASON_TEXT.get(ejection.reason or "", ejection.reason or "")
    if ejection.probation:
        return f"[yellow]probation[/] ({escape(reason)})"
    return f"[red]ejected[/] {ejection.remaining_s:.0f}s: {escape(reason)}"


def _connections_text(connections: BackendConnections | None) -> str:
    if connections is None:
        return "-"
    text = f"{connections.busy}+{connections.idle}/{connections.max_connections}"
    if connections.pending:
        text += f" [yellow]{connections.pending} waiting[/]"
    if connections.saturated_total:
        text += f" [red]{connections.saturated_total} refused[/]"
    return text


@click.command()
@click.option("--if-match", metavar="ETAG", help="Reload only if the config is at this version.")
@pass_settings
def reload(settings: Settings, if_match: str | None) -> None:
    """Re-read the config file now. An invalid file is refused with its errors, and the
    running configuration keeps serving."""
    result = run(settings, lambda client: client.reload(if_match=if_match))
    if settings.json:
        echo_json(result)
        return
    console().print(
        f"reloaded {escape(result.source_path or '')}: config version {result.config_version}, "
        f"ETag {result.etag}, {result.routes} routes"
    )


def _backends_table(result: BackendList) -> object:
    out = table(
        "Backends",
        [
            "address",
            "avail",
            "healthy",
            "breaker",
            "ejection",
            "inflight",
            "conns busy+idle/max",
            "EWMA ms",
            "routes",
            "probe",
        ],
    )
    for backend in result.backends:
        check = backend.health_check
        if check.path is None:
            probe = "-"  # no health_check_path: never probed
        elif check.last_error:
            probe = f"[red]{escape(check.last_error)}[/]"
        else:
            probe = "ok" if check.last_check else "pending"
        breaker: str = backend.circuit_breaker.state
        if breaker == "open":
            breaker = f"[red]open[/] ({backend.circuit_breaker.retry_after_s:.0f}s)"
        out.add_row(
            backend.address,
            yes_no(backend.available),
            yes_no(backend.healthy),
            breaker,
            _ejection_text(backend.ejection),
            str(backend.inflight),
            _connections_text(backend.connections),
            fmt_ms(backend.ewma_latency_ms),
            escape("\n".join(backend.routes)),
            probe,
        )
    return out


@click.command()
@pass_settings
def backends(settings: Settings) -> None:
    """Every backend address: routes, health, circuit breaker, ejection (outlier
    detection), load, connections and latency; and the routes with no backend left."""
    result = run(settings, lambda client: client.backends())
    if settings.json:
        echo_json(result)
        return
    if not result.backends:
        console().print("no backends (the configuration has no routes)")
        return
    console().print(_backends_table(result))
    if result.routes_down:
        console().print(_routes_down(result.routes_down))
