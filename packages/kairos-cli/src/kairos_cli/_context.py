"""What every command gets: the global options, and a way to call the gateway.

The client is async; each command runs one coroutine to completion with
`asyncio.run`, inside one `KairosClient` (one aiohttp session), so a command that
makes several calls reuses its connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import click
from kairos_client import KairosClient

__all__ = ["Settings", "pass_settings", "run"]

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


def run(settings: Settings, work: Callable[[KairosClient], Awaitable[T]]) -> T:
    """Run ``work`` with a client on a fresh event loop; the client is closed after."""

    async def call() -> T:
        async with settings.client() as client:
            return await work(client)

    return asyncio.run(call())
