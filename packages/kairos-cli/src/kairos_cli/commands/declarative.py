"""`kairos config dump | diff FILE | apply FILE`: the configuration as a file you keep.

The loop: ``dump`` the live configuration to a file, edit it, ``diff`` it against the
gateway, ``apply`` it. ``apply`` sends the result of `config_diff.target` with
``PUT /api/config`` and ``If-Match`` naming the version it diffed against, so a change
made on the gateway in between is refused (412) and never overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from kairos_client import KairosClient, PreconditionFailed, Versioned
from kairos_core import ConfigError, GatewayConfig, load_config
from rich.markup import escape

from .._context import Settings, pass_settings, run
from ..config_diff import ConfigData, ConfigDiff, FieldChange, diff, target
from ..errors import CliError, ExitStatus, field_lines
from ..jsonc import load_config_file
from ..output import console, echo_json, err_console

__all__ = ["apply", "diff_command", "dump", "plan", "print_diff", "send"]

_REVEAL = {"reveal_secrets": True}
_SECRETS = click.option(
    "--secrets",
    type=click.Choice(["redacted", "clear"]),
    default="redacted",
    show_default=True,
    help="clear: read the gateway's secrets in clear (admin role; audited).",
)
_SIGNS = {"added": ("+", "green"), "changed": ("~", "yellow"), "removed": ("-", "red")}


def _data(config: GatewayConfig) -> ConfigData:
    """The configuration as JSON data, defaults included, secrets as it holds them."""
    data: ConfigData = config.model_dump(mode="json", exclude_none=True, context=_REVEAL)
    return data


def _read_file(file: Path) -> GatewayConfig:
    """The config file, validated offline (``"***"`` secrets accepted: "keep the live one")."""
    try:
        data = load_config_file(file, redacted=True)[0]
    except ConfigError as exc:
        if len(exc.errors) == 1 and not exc.errors[0].loc:
            raise CliError(f"{file}: {exc.errors[0]}") from None
        raise CliError(f"{file}: {exc.detail}", details=field_lines(exc.errors)) from None
    return data


async def plan(
    client: KairosClient, file: Path, *, prune: bool, secrets: str
) -> tuple[Versioned[GatewayConfig], ConfigData, ConfigDiff]:
    """Read the file and the live configuration; return the live one (with its ETag),
    the configuration to send, and what sending it changes."""
    wanted_config = _read_file(file)
    live = await client.get_config(secrets=secrets)
    live_data = _data(live.value)
    wanted = target(live_data, wanted_config, _data(wanted_config), prune=prune)
    try:
        changes = diff(
            live_data,
            wanted,
            file_ids=None if prune else {r.id for r in wanted_config.routers},
            compared=secrets == "clear",
        )
    except ConfigError as exc:
        raise CliError(
            f"{file}: merged with the live configuration it is invalid: {exc.detail}",
            details=field_lines(exc.errors),
        ) from None
    return live, wanted, changes


async def send(client: KairosClient, wanted: ConfigData, etag: str | None) -> str | None:
    """``PUT /api/config`` with ``If-Match: etag``; returns the new ETag. A 412 (the
    configuration changed since ``etag`` was read) becomes a `CliError` saying so."""
    try:
        done = await client.replace_config(wanted, if_match=etag)
    except PreconditionFailed as exc:
        raise CliError(
            f"not applied: the configuration on the gateway changed after it was read "
            f"(ETag {etag}): {exc.problem.detail}. Run the command again to diff against "
            "the new version",
            ExitStatus.CLIENT_ERROR,
        ) from exc
    return done.etag


def _value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False)


def _field_line(change: FieldChange) -> str:
    where = change.path or "value"
    if change.secret:
        if change.compared:
            return f"{where}: (secret changed)"
        return f"{where}: (secret given in clear: not compared; --secrets clear compares it)"
    return f"{where}: {_value(change.old)} -> {_value(change.new)}"


def print_diff(changes: ConfigDiff) -> None:
    """The diff for people: one line per route or setting, the changed values below;
    coloured on a terminal (not with NO_COLOR), plain otherwise."""
    out = console()
    for item in changes.changes:
        sign, colour = _SIGNS[item.change]
        if item.subject == "route":
            head = f"{sign} route {item.key}" + (
                f" ({item.label})" if item.key != item.label else ""
            )
        else:
            head = f"{sign} setting {item.key}"
        out.print(f"[{colour}]{escape(head)}[/]")
        for line in item.fields:
            out.print(f"    {escape(_field_line(line))}")
    if changes.kept:
        count = len(changes.kept)
        out.print(
            f"{count} route{'' if count == 1 else 's'} on the gateway not in the file: kept "
            "(--prune removes them)",
            markup=False,
        )
    out.print(changes.counts(), markup=False)


@click.command()
@_SECRETS
@click.option(
    "--full", is_flag=True, help="Write every setting, defaults included (else only changed ones)."
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@pass_settings
def dump(settings: Settings, secrets: str, full: bool, output: Path | None, force: bool) -> None:
    """Write the live configuration as a JSON config file.

    Secrets are "***" (sent back by `config apply`, they keep the gateway's values)
    unless --secrets clear, which needs the admin role and is recorded in the gateway's
    audit trail. Only the settings that differ from their defaults are written, unless
    --full. `kairos config diff` and `apply` take the file back.
    """
    result = run(settings, lambda client: client.get_config(secrets=secrets))
    text = json.dumps(_file_data(result.value, full=full), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_private(output, text, force=force)
    note = "secrets in clear" if secrets == "clear" else "secrets are shown as ***"
    where = f"; wrote {output}" if output is not None else ""
    err_console().print(f"# config ETag {result.etag}; {note}{where}", markup=False)


def _file_data(config: GatewayConfig, *, full: bool) -> ConfigData:
    """What ``dump`` writes: without defaults unless ``full``, or when leaving them out
    would not load back to the same configuration."""
    every = _data(config)
    if full:
        return every
    small: ConfigData = config.model_dump(
        mode="json", exclude_none=True, exclude_defaults=True, context=_REVEAL
    )
    try:
        same = _data(load_config(small, redacted=True)) == every
    except ConfigError:
        same = False
    return small if same else every


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to a new file readable by its owner only (it may hold secrets)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)  # also an existing file overwritten with --force
        out.write(text)


_PRUNE = click.option(
    "--prune",
    is_flag=True,
    help="Remove routes and settings the file does not list (else they are kept).",
)


@click.command("diff")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_PRUNE
@_SECRETS
@click.pass_context
def diff_command(ctx: click.Context, file: Path, prune: bool, secrets: str) -> None:
    """What `kairos config apply FILE` would change, by route id and setting.

    Exit status 0: the gateway already runs what the file says; 6: it differs (like
    diff's 1 or terraform's -detailed-exitcode 2, which this CLI uses for other
    things); others: an error, as for every command.
    """
    settings = ctx.find_object(Settings)
    assert settings is not None
    live, _, changes = run(settings, lambda c: plan(c, file, prune=prune, secrets=secrets))
    if settings.json:
        echo_json({**changes.as_json(), "etag": live.etag})
    else:
        print_diff(changes)
    if not changes.in_sync:
        ctx.exit(ExitStatus.CHANGES)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_PRUNE
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@_SECRETS
@pass_settings
def apply(settings: Settings, file: Path, prune: bool, dry_run: bool, secrets: str) -> None:
    """Make the gateway run what FILE says (PUT /api/config; the admin role).

    Routes are matched by id (name, else derived from methods and path): the file's
    routes are added or replace the live ones; without --prune, live routes and
    settings the file leaves out are kept. FILE and the result are validated first,
    offline and by the gateway (POST /api/config/validate: plugin settings too);
    the change is sent with If-Match of the version diffed against, so a change made
    on the gateway meanwhile is refused (exit 4), never overwritten.
    """

    async def work(client: KairosClient) -> tuple[ConfigDiff, str | None, bool]:
        live, wanted, changes = await plan(client, file, prune=prune, secrets=secrets)
        if changes.in_sync:
            return changes, live.etag, False
        checked = await client.validate_config(wanted)  # the gateway's own checks too
        if not checked.valid:
            raise CliError(
                f"{file}: the gateway would refuse the result "
                f"({len(checked.errors)} error{'' if len(checked.errors) == 1 else 's'})",
                details=field_lines(checked.errors),
            )
        if dry_run:
            return changes, live.etag, False
        return changes, await send(client, wanted, live.etag), True

    changes, etag, applied = run(settings, work)
    if settings.json:
        echo_json({**changes.as_json(), "applied": applied, "dry_run": dry_run, "etag": etag})
        return
    print_diff(changes)
    if dry_run:
        console().print("dry run: nothing applied", markup=False)
    elif not applied:
        console().print(f"nothing to apply; ETag {etag}", markup=False)
    else:
        console().print(f"applied; ETag {etag}", markup=False)
