"""`kairos audit` and `kairos config versions|rollback`: who changed the configuration,
and going back to a kept version."""

from __future__ import annotations

import click
from kairos_core import AuditPage, ConfigVersions
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..output import console, echo_json, table

__all__ = ["audit", "rollback", "versions"]

_SIGNS = {"added": "+", "changed": "~", "removed": "-"}


def _audit_table(page: AuditPage) -> object:
    out = table("Audit", ["id", "when (UTC)", "who", "from", "how", "what changed", "version"])
    for entry in page.entries:
        changes = "; ".join(
            f"{_SIGNS[c.change]} {c.route if c.route is not None else c.setting}"
            for c in entry.changes
        )
        if entry.trigger == "secrets_read":
            changes = "nothing; read the secrets in clear"
        out.add_row(
            str(entry.id),
            entry.at.replace("T", " ").removesuffix("Z"),
            escape(entry.actor),
            escape(entry.source or "-"),
            escape(entry.trigger),
            escape(changes),
            entry.version[:12],
        )
    return out


@click.command()
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Entries to show."
)
@click.option("--before", type=click.IntRange(min=1), help="Only entries older than this id.")
@pass_settings
def audit(settings: Settings, limit: int, before: int | None) -> None:
    """Configuration changes, newest first: when, who (token name), from where, how
    (api, rollback, watcher, sighup, cluster) and what changed. Values are never shown:
    the gateway never records them."""
    page = run(settings, lambda client: client.audit(limit=limit, before=before))
    if settings.json:
        echo_json(page)
        return
    console().print(_audit_table(page))
    if page.next is not None:
        console().print(f"older entries: kairos audit --before {page.next}", markup=False)


def _versions_table(result: ConfigVersions) -> object:
    out = table("Kept versions", ["version", "saved at", "live"])
    for version in result.versions:
        out.add_row(version.version, version.saved_at or "-", "live" if version.live else "")
    return out


@click.command()
@pass_settings
def versions(settings: Settings) -> None:
    """The configuration versions the gateway keeps for `kairos config rollback`."""
    result = run(settings, lambda client: client.config_versions())
    if settings.json:
        echo_json(result)
        return
    console().print(_versions_table(result))


@click.command()
@click.argument("version")
@click.option("--if-match", metavar="ETAG", help="Roll back only if the config is at this version.")
@pass_settings
def rollback(settings: Settings, version: str, if_match: str | None) -> None:
    """Make a kept configuration VERSION live again (saved like any change)."""
    result = run(settings, lambda client: client.rollback(version, if_match=if_match))
    if settings.json:
        echo_json(result)
        return
    console().print(f"version {result.restored} is live again", markup=False)
