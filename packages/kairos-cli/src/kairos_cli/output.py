"""Human output (rich tables) and machine output (``--json``: the models' JSON)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

__all__ = [
    "console",
    "dump",
    "echo_json",
    "err_console",
    "fmt_duration",
    "fmt_ms",
    "fmt_rate",
    "fmt_ratio",
    "key_values",
    "table",
    "yes_no",
]


#: Width of tables written to a pipe or file (rich would assume 80 columns).
_PIPE_WIDTH = 160


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(
        stderr=stderr, highlight=False, soft_wrap=True, width=_PIPE_WIDTH if piped else None
    )


def console() -> Console:
    """A console on the current stdout (looked up at each write, so redirection and
    test runners that swap `sys.stdout` are honoured)."""
    return _console(stderr=False)


def err_console() -> Console:
    return _console(stderr=True)


def dump(value: BaseModel) -> Any:
    """A model as JSON data, fields left at None omitted (explicit route nulls kept)."""
    return value.model_dump(mode="json", exclude_none=True)


def echo_json(data: Any, *, compact: bool = False) -> None:
    if isinstance(data, BaseModel):
        data = dump(data)
    text = json.dumps(
        data,
        ensure_ascii=False,
        separators=(",", ":") if compact else None,
        indent=None if compact else 2,
    )
    click.echo(text)


def table(title: str | None, columns: Iterable[str]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for index, name in enumerate(columns):
        out.add_column(name, no_wrap=index == 0)  # the first column names the row
    return out


def key_values(rows: Iterable[tuple[str, str]], title: str | None = None) -> Table:
    """A two-column table without a header: one fact per row."""
    out = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    out.add_column(style="bold")
    out.add_column()
    for key, value in rows:
        out.add_row(key, value)
    return out


def yes_no(value: bool | None) -> str:
    if value is None:
        return "-"
    return "[green]yes[/]" if value else "[red]no[/]"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_rate(value: float) -> str:
    return f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def fmt_duration(seconds: float) -> str:
    """``3h 25m 7s``, ``4m 2s``, ``12.3s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts += [f"{minutes}m", f"{secs}s"]
    return " ".join(parts)
