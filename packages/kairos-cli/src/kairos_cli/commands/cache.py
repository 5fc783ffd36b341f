"""`kairos cache`: the response cache's figures, and purging it."""

from __future__ import annotations

import click

from .._context import Settings, pass_settings, run
from ..output import console, echo_json, table

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """The response cache (the cache plugin): figures per store, purging."""


@cache.command("stats")
@pass_settings
def stats(settings: Settings) -> None:
    """Hits, misses, stale answers, entries and bytes of each store in use."""
    status = run(settings, lambda client: client.cache_stats())
    if settings.json:
        echo_json(status)
        return
    if not status.stores:
        console().print("no cache store in use (no route enables the cache plugin)")
        return
    columns = ["store", "entries", "bytes", "hits", "misses", "stale", "bypass", "evictions"]
    out = table("Cache", columns)
    for row in status.stores:
        out.add_row(*(str(getattr(row, name)) for name in columns))
    console().print(out)


@cache.command("purge")
@click.option("--key", help="One cache key (host, path and query: api.example/users/1?a=b).")
@click.option("--route", help="Every entry of a route, by its external path (/users/{id}).")
@click.option("--tag", help="Every entry tagged so by the backend (its Cache-Tag header).")
@pass_settings
def purge(settings: Settings, key: str | None, route: str | None, tag: str | None) -> None:
    """Remove cached responses: give exactly one of --key, --route or --tag."""
    if sum(v is not None for v in (key, route, tag)) != 1:
        raise click.UsageError("give exactly one of --key, --route or --tag")
    result = run(settings, lambda client: client.purge_cache(key=key, route=route, tag=tag))
    if settings.json:
        echo_json(result)
        return
    line = f"purged {result.purged} cached responses"
    if result.workers is not None:
        line += f" ({result.workers} workers"
        if result.workers_pending:
            line += f"; {result.workers_pending} more apply it without having answered"
        line += ")"
    console().print(line, markup=False)
