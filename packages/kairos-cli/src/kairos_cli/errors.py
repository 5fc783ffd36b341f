"""Exit statuses and the one place that turns any failure into a readable line.

Every command lets errors propagate; `KairosGroup.invoke` (see `main`) hands them to
`to_cli_error`, which maps them, most specific first, onto a `CliError`: a
`click.ClickException` whose ``exit_code`` is an `ExitStatus` and whose `show` prints
one line on stderr (plus one line per field error for a 422)::

    kairos: 404 route_not_found: no route at /x (request 3f2a9c...)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import IntEnum
from typing import IO, Any

import click
from kairos_client import (
    ApiError,
    GatewayTimeout,
    GatewayUnavailable,
    InvalidResponse,
    Unauthorized,
)
from kairos_core import ConfigError, FieldError, FieldErrorBody

__all__ = ["CliError", "ExitStatus", "field_lines", "to_cli_error"]


class ExitStatus(IntEnum):
    """The exit status of `kairos`: what kind of failure, for scripts to branch on."""

    OK = 0
    #: The command failed: an invalid config or route, a file that cannot be read, an
    #: answer the CLI cannot understand.
    ERROR = 1
    #: Bad command line: unknown option, missing argument, malformed value.
    USAGE = 2
    #: No answer from the gateway: connection refused, name not found, timeout.
    UNREACHABLE = 3
    #: The gateway refused the request (4xx): not found, conflict, invalid, no token.
    CLIENT_ERROR = 4
    #: The gateway failed (5xx), e.g. 503 not_persisted.
    SERVER_ERROR = 5
    #: Not a failure: `kairos config diff` found that the gateway differs from the file.
    CHANGES = 6


class CliError(click.ClickException):
    """A failure to report as ``kairos: <message>`` (and ``details``, indented) on stderr."""

    def __init__(
        self,
        message: str,
        status: ExitStatus = ExitStatus.ERROR,
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar but reads it from the instance.
        self.exit_code = int(status)  # type: ignore[misc]
        self.details = list(details)

    def show(self, file: IO[Any] | None = None) -> None:
        for line in [f"kairos: {self.format_message()}", *(f"  {d}" for d in self.details)]:
            click.echo(line, file=file, err=file is None)


def field_lines(errors: Sequence[FieldError | FieldErrorBody]) -> list[str]:
    """One ``path: message`` line per field error (the message alone for the whole
    document), with the offending value when there is one."""
    lines = []
    for error in errors:
        if isinstance(error, FieldError):
            lines.append(str(error))
            continue
        line = f"{error.path}: {error.message}" if error.path else error.message
        if error.value is not None:
            line += f" (got {json.dumps(error.value, ensure_ascii=False)[:80]})"
        lines.append(line)
    return lines


def _api_error(exc: ApiError) -> CliError:
    problem = exc.problem
    kind = problem.title if problem.type == "about:blank" else problem.type
    message = f"{exc.status} {kind}: {problem.detail}"
    if problem.request_id:
        message += f" (request {problem.request_id})"
    details = field_lines(problem.errors or [])
    if isinstance(exc, Unauthorized):
        details.append("hint: pass --token or set KAIROS_ADMIN_TOKEN")
    if 400 <= exc.status < 500:
        status = ExitStatus.CLIENT_ERROR
    elif exc.status >= 500:
        status = ExitStatus.SERVER_ERROR
    else:
        status = ExitStatus.ERROR
    return CliError(message, status, details)


def to_cli_error(exc: Exception) -> CliError:
    """The `CliError` for ``exc``; anything unforeseen becomes exit status 1."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, GatewayTimeout):
        return CliError(f"gateway did not answer in time: {exc}", ExitStatus.UNREACHABLE)
    if isinstance(exc, GatewayUnavailable):
        return CliError(f"gateway unreachable: {exc}", ExitStatus.UNREACHABLE)
    if isinstance(exc, ApiError):
        return _api_error(exc)
    if isinstance(exc, InvalidResponse):
        # The first line names the model; pydantic's details follow (--debug shows them).
        summary = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CliError(f"unexpected answer from the gateway: {summary}")
    if isinstance(exc, ConfigError):
        return CliError(exc.detail, details=field_lines(exc.errors))
    if isinstance(exc, OSError):
        return CliError(str(exc))
    return CliError(f"unexpected error: {type(exc).__name__}: {exc} (--debug shows the traceback)")
