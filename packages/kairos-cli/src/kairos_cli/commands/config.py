"""`kairos config show | validate FILE | generate`.

``validate`` and ``generate`` work offline, with kairos-core alone: the same models
and rules the gateway loads its file with.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from kairos_core import ConfigError, FieldErrorBody, ValidationResult, config_to_json, redacted

from .._context import Settings, pass_settings, run
from ..errors import CliError, ExitStatus, field_lines
from ..jsonc import example_config, load_config_file
from ..output import console, echo_json, err_console

__all__ = ["config"]


@click.group()
def config() -> None:
    """The running configuration: show, dump, diff and apply a file; validate or
    generate one offline; versions and rollback."""


@config.command()
@pass_settings
def show(settings: Settings) -> None:
    """The running configuration as JSON (secrets shown as "***").

    Standard output is the JSON alone, so `kairos config show > config.json` works;
    the ETag goes to standard error.
    """
    result = run(settings, lambda client: client.get_config())
    data = redacted(result.value)
    if settings.json:
        echo_json(data)
        return
    err_console().print(f"# config ETag {result.etag}; secrets are shown as ***", markup=False)
    console().print_json(json.dumps(data))


def _write(path: Path, text: str, *, force: bool) -> None:
    if path.exists() and not force:
        raise CliError(f"{path} exists; pass --force to overwrite it")
    try:
        path.write_text(text, "utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc


@config.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="When valid, also write it as the canonical plain JSON the gateway reads.",
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.pass_context
def validate(ctx: click.Context, file: Path, output: Path | None, force: bool) -> None:
    """Check a config file offline; list every error with its field path.

    FILE may hold // comments (as `kairos config generate` writes). Exit status 1 when
    the file is invalid or cannot be read. Checks needing the network or other files
    (a JWKS URL, a tls_ca_file's content) are left to the gateway.
    """
    settings = ctx.find_object(Settings)
    assert settings is not None
    try:
        loaded, commented = load_config_file(file)
    except ConfigError as exc:
        if settings.json:
            errors = [FieldErrorBody.model_validate(e.as_dict()) for e in exc.errors]
            echo_json(ValidationResult(valid=False, errors=errors))
            ctx.exit(ExitStatus.ERROR)
        if len(exc.errors) == 1 and not exc.errors[0].loc:  # unreadable, not JSON: one line
            raise CliError(f"{file}: {exc.errors[0]}") from None
        raise CliError(f"{file}: {exc.detail}", details=field_lines(exc.errors)) from None
    if output is not None:
        _write(output, config_to_json(loaded) + "\n", force=force)
    if settings.json:
        echo_json(ValidationResult(valid=True, errors=[]))
        return
    count = len(loaded.routers)
    message = f"{file}: valid ({count} route{'' if count == 1 else 's'})"
    if output is not None:
        message += f"; written as plain JSON to {output}"
    elif commented:
        message += "; it has comments, so write it as plain JSON for the gateway with --output"
    console().print(message, markup=False)


@config.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonc", "json"]),
    default="jsonc",
    show_default=True,
    help="jsonc: JSON with a // comment on each setting; json: the same, plain.",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file."
)
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@pass_settings
def generate(settings: Settings, fmt: str, output: Path | None, force: bool) -> None:
    """Write an example configuration to start from.

    The commented form (the default) is read by `kairos config validate`, whose
    --output turns it into the plain JSON the gateway reads. --json implies
    --format json.
    """
    text = example_config(comments=fmt == "jsonc" and not settings.json)
    if output is None:
        click.echo(text, nl=False)
        return
    _write(output, text, force=force)
    err_console().print(f"wrote {output}", markup=False)
