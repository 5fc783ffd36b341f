"""What every command gets: the global options, and a way to call the gateway.

The client is async; each command runs one coroutine to completion with
`asyncio.run`, inside one `KairosClient` (one aiohttp session), so a command that
makes several calls reuses its connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import click
from kairos_client import KairosClient

__all__ = ["Settings", "add_json_option", "pass_settings", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, validated once by the group callback."""

    url: str
    token: str | None
    timeout: float
    json: bool
    debug: bool

    def client(self) -> KairosClient:
        return KairosClient(self.url, self.token, self.timeout)


pass_settings = click.make_pass_decorator(Settings)


def _json_here(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    """``--json`` after the subcommand: this command's settings say JSON."""
    settings = ctx.find_object(Settings)
    if value and settings is not None:
        ctx.obj = dataclasses.replace(settings, json=True)


def add_json_option(command: click.Command) -> None:
    """Give ``command`` and every command below it a ``--json`` of its own, the same
    as the global one (``kairos routes list --json`` = ``kairos --json routes list``)."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_json_option(sub)
        return
    if any("--json" in param.opts for param in command.params):
        return
    command.params.append(
        click.Option(
            ["--json"],
            is_flag=True,
            expose_value=False,
            callback=_json_here,
            help="Print JSON for scripts (the same as kairos --json).",
        )
    )


def run(settings: Settings, work: Callable[[KairosClient], Awaitable[T]]) -> T:
    """Run ``work`` with a client on a fresh event loop; the client is closed after."""

    async def call() -> T:
        async with settings.client() as client:
            return await work(client)

    return asyncio.run(call())
