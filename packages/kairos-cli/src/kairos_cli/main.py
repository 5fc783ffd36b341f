"""The `kairos` command: global options, the subcommands, and the one error handler.

`KairosGroup.invoke` is the only place failures are turned into output: every
exception a command lets through becomes a `CliError` (one line on stderr, an
`ExitStatus` as the exit code); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click
from kairos_client import DEFAULT_URL, KairosClient

from ._context import Settings, add_json_option
from ._version import __version__
from .commands.ai import ai
from .commands.audit import audit, rollback, versions
from .commands.cache import cache
from .commands.config import config
from .commands.declarative import apply, diff_command, dump
from .commands.events import events
from .commands.gateway import backends, health, reload, status
from .commands.metrics import metrics
from .commands.plugins import plugins
from .commands.routes import routes
from .errors import to_cli_error

__all__ = ["cli", "main"]

_EPILOG = """\b
Exit status:
  0  ok
  1  error (an invalid config or route, a file that cannot be read)
  2  usage (unknown option, missing argument, malformed value)
  3  gateway unreachable (connection refused, timeout)
  4  the gateway refused the request (4xx: not found, conflict, invalid, no token)
  5  the gateway failed (5xx)
  6  config diff: the gateway differs from the file (0: it does not)
"""


class KairosGroup(click.Group):
    """A group whose commands' failures are reported by `to_cli_error`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            settings = ctx.find_object(Settings)
            if settings is not None and settings.debug:
                traceback.print_exception(exc, file=sys.stderr)
            raise to_cli_error(exc) from exc


@click.group(
    cls=KairosGroup,
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--url",
    envvar="KAIROS_GATEWAY_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The gateway (or its admin listener). Env: KAIROS_GATEWAY_URL.",
)
@click.option(
    "--token",
    envvar="KAIROS_ADMIN_TOKEN",
    help="Admin bearer token. Env: KAIROS_ADMIN_TOKEN.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(__version__, "--version", "-V", prog_name="kairos")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str,
    token: str | None,
    timeout: float,
    json_output: bool,
    debug: bool,
) -> None:
    """Manage a running Kairos gateway: status, routes, configuration, metrics, plugins,
    live events."""
    try:
        KairosClient(url, token, timeout)  # checks the URL; opens nothing
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--url'") from None
    ctx.obj = Settings(
        url=url.rstrip("/"), token=token or None, timeout=timeout, json=json_output, debug=debug
    )


for sub in (dump, diff_command, apply, versions, rollback):
    config.add_command(sub)
for command in (
    status,
    health,
    reload,
    backends,
    plugins,
    metrics,
    routes,
    config,
    cache,
    ai,
    audit,
    events,
):
    add_json_option(command)
    cli.add_command(command)


def main() -> None:
    """Console-script entry point (``kairos``)."""
    cli.main(prog_name="kairos")
