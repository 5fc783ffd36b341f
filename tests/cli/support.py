"""Running `kairos` in-process against a gateway served on the test's event loop.

`CliRunner.invoke` is synchronous and the CLI runs its own event loop (`asyncio.run`),
so it runs in a worker thread (`asyncio.to_thread`) while the test's loop keeps
serving the in-process gateway. Every run is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner
from kairos_cli import cli

#: The environment variables the CLI reads, cleared unless a test sets them.
_CLEAN_ENV: dict[str, str | None] = {"KAIROS_GATEWAY_URL": None, "KAIROS_ADMIN_TOKEN": None}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]


async def kairos(
    *args: str,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> Run:
    """``kairos [--url URL] --timeout 5 ARGS...``; returns exit code and both streams."""
    argv = (["--url", url] if url else []) + ["--timeout", "5", *args]
    runner = CliRunner()
    result = await asyncio.wait_for(
        asyncio.to_thread(
            runner.invoke,
            cli,
            argv,
            input=input,
            env={**_CLEAN_ENV, **(env or {})},
            catch_exceptions=False,
            prog_name="kairos",
        ),
        30,
    )
    return Run(result.exit_code, result.stdout, result.stderr)


def route_data(external: str, internal: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "external_path": external,
        "internal_path": internal,
        "methods": extra.pop("methods", ["GET"]),
        "backends": [{"host": "http://127.0.0.1", "port": port}],
        **extra,
    }
