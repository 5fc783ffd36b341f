"""`kairos routes list | show | add | update | delete | validate`."""

from __future__ import annotations

import json
from typing import Any

import click
from kairos_client import KairosClient, Versioned
from kairos_core import Router
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..errors import ExitStatus, field_lines
from ..output import console, dump, echo_json, err_console, key_values, table
from ..route_input import route_from, route_options

__all__ = ["routes"]

#: A route: its name or id (`kairos routes list` shows them), or its external path.
_PATH = click.argument("path", metavar="ROUTE")
_IF_MATCH = click.option(
    "--if-match",
    metavar="ETAG",
    help="Refuse the change (412) unless the config is still at this version.",
)
_PICK = click.option(
    "--method",
    "--for-method",
    "for_method",
    metavar="METHOD",
    help="Pick one route when several share the path ROUTE (each for other methods).",
)


def _backends(route: Router) -> str:
    return "\n".join(
        f"{b.address}" + (f" (weight {b.weight})" if b.weight != 1 else "") for b in route.backends
    )


def _show_route(route: Router, etag: str | None, verb: str | None = None) -> None:
    out = console()
    if verb is not None:
        line = f"{verb} {','.join(route.methods)} {route.external_path} -> {route.internal_path}"
        out.print(line, markup=False)
    data = dump(route)
    rows = [] if route.name is not None else [("id", escape(route.id) + " (derived)")]
    for key, value in data.items():
        if key == "backends":
            text = _backends(route)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            text = ", ".join(value)
        elif isinstance(value, dict | list) or value is None:
            text = json.dumps(value)
        else:
            text = str(value)
        rows.append((key, escape(text)))
    out.print(key_values(rows))
    if etag:
        out.print(f"ETag {etag}")


@click.group()
def routes() -> None:
    """List, inspect and change routes (live at once, saved to the config file)."""


@routes.command("list")
@click.option(
    "--tag",
    "tags",
    metavar="TAG",
    multiple=True,
    help="Only routes carrying TAG; repeat it for routes carrying every one given.",
)
@pass_settings
def list_routes(settings: Settings, tags: tuple[str, ...]) -> None:
    """Every route (or those with the given tags), with its id and backends."""
    result = run(settings, lambda client: client.list_routes(tag=tags[0] if tags else None))
    listing = result.value
    if len(tags) > 1:  # the gateway filters by one tag; the others are checked here
        kept = [r for r in listing.routes if set(tags) <= set(r.tags or ())]
        listing = listing.model_copy(update={"ids": [r.id for r in kept], "routes": kept})
    if settings.json:
        echo_json(listing)
        return
    out = table(
        None,
        ["id", "methods", "external path", "internal path", "backends", "strategy", "auth", "tags"],
    )
    for route in listing.routes:
        out.add_row(
            escape(route.id),
            ",".join(route.methods),
            escape(route.external_path),
            escape(route.internal_path),
            _backends(route),
            route.load_balancing_strategy,
            "jwt" if route.auth_required else "-",
            escape(", ".join(route.tags or ())) or "-",
        )
    con = console()
    con.print(out)
    count = len(listing.routes)
    con.print(
        f"{count} route{'' if count == 1 else 's'}; config version "
        f"{listing.config_version}, ETag {result.etag}"
    )


@routes.command()
@_PATH
@_PICK
@pass_settings
def show(settings: Settings, path: str, for_method: str | None) -> None:
    """One route, by its name or id, or its external path (as written: /api/users/{id})."""
    result = run(settings, lambda client: client.get_route(path, for_method))
    if settings.json:
        echo_json(result.value)
        return
    _show_route(result.value, result.etag)


@routes.command()
@route_options
@_IF_MATCH
@pass_settings
def add(settings: Settings, /, if_match: str | None, **flags: Any) -> None:
    """Create a route: from --file, from flags, or both (flags win).

    \b
    kairos routes add -e '/api/users/{id}' -i '/users/{id}' -m GET \\
        -b http://10.0.0.5:8080 -b http://10.0.0.6:8080
    """
    route = route_from(flags)
    result = run(settings, lambda client: client.create_route(route, if_match=if_match))
    if settings.json:
        echo_json(result.value)
        return
    _show_route(result.value, result.etag, verb="added")


@routes.command()
@_PATH
@click.option(
    "--for-method",
    "for_method",
    metavar="METHOD",
    help="Pick one route when several share the path ROUTE (--method sets its methods).",
)
@route_options
@_IF_MATCH
@pass_settings
def update(
    settings: Settings, /, path: str, for_method: str | None, if_match: str | None, **flags: Any
) -> None:
    """Change ROUTE (its name or id, or its external path).

    With --file the file is the whole new route; with flags only, the flags change the
    current route. Without --if-match the change is made against the version just read,
    so an edit by someone else in between is refused (412), never overwritten.
    """

    async def work(client: KairosClient) -> Versioned[Router]:
        expected = if_match
        if flags.get("file"):
            route = route_from(flags)
        else:
            current = await client.get_route(path, for_method)
            # Secrets as held ("***" read from the gateway goes back as "***": "keep it").
            base = current.value.model_dump(
                mode="json", exclude_none=True, context={"reveal_secrets": True}
            )
            route = route_from(flags, base)
            expected = expected or current.etag
        return await client.update_route(path, route, method=for_method, if_match=expected)

    result = run(settings, work)
    if settings.json:
        echo_json(result.value)
        return
    _show_route(result.value, result.etag, verb="updated")


@routes.command()
@_PATH
@_PICK
@_IF_MATCH
@pass_settings
def delete(settings: Settings, path: str, for_method: str | None, if_match: str | None) -> None:
    """Remove ROUTE (its name or id, or its external path); its path answers 404 at once."""
    etag = run(
        settings, lambda client: client.delete_route(path, method=for_method, if_match=if_match)
    )
    if settings.json:
        echo_json({"deleted": path, "method": for_method, "etag": etag})
        return
    console().print(f"deleted {path}; ETag {etag}", markup=False)


@routes.command()
@route_options
@click.pass_context
def validate(ctx: click.Context, /, **flags: Any) -> None:
    """Would the gateway accept this route? Nothing is saved; exit status 1 if not."""
    settings = ctx.find_object(Settings)
    assert settings is not None
    route = route_from(flags)
    result = run(settings, lambda client: client.validate_route(route))
    if settings.json:
        echo_json(result)
    elif result.valid:
        console().print("valid")
    else:
        err = err_console()
        count = len(result.errors)
        err.print(f"invalid: {count} error{'' if count == 1 else 's'}", markup=False)
        for line in field_lines(result.errors):
            err.print(f"  {line}", markup=False)
    if not result.valid:
        ctx.exit(ExitStatus.ERROR)
