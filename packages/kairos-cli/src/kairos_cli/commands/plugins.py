"""`kairos plugins`: the policies a route can run, built in and installed."""

from __future__ import annotations

import click
from kairos_core import PluginCatalog, PluginInfo
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..output import console, echo_json, err_console, table

__all__ = ["plugins"]


def _package(info: PluginInfo) -> str:
    if info.package is None:
        return "-"
    return f"{info.package} {info.version}" if info.version else info.package


def _plugins_table(catalog: PluginCatalog) -> object:
    out = table("Plugins", ["name", "kind", "priority", "phases", "package", "description"])
    for info in catalog.plugins:
        out.add_row(
            escape(info.name),
            "builtin" if info.builtin else "plugin",
            str(info.priority),
            ", ".join(info.phases) or "-",
            escape(_package(info)),
            escape(info.description),
        )
    return out


@click.command()
@pass_settings
def plugins(settings: Settings) -> None:
    """Built-in policies and installed plugins, highest priority first; entry points
    that failed to load are shown as warnings."""
    catalog = run(settings, lambda client: client.plugins())
    if settings.json:
        echo_json(catalog)
        return
    console().print(_plugins_table(catalog))
    err = err_console()
    for name, reason in catalog.errors.items():
        err.print(f"warning: plugin {name!r} not loaded: {reason}", markup=False)
