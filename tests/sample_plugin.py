"""A plugin installed the way a distribution installs one, for the tests of
`GET /api/plugins` and what shows it (client, CLI, UI).

`installed_plugin_gateway` writes a distribution's metadata (``kairos-sample-plugin``
1.2.3) into a temporary directory on ``sys.path``; its entry points name `PLUGIN`
(``stamp``) and one object that cannot be imported (``broken``). Each call uses an
entry-point group of its own, because the gateway reads a group once per process.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kairos_core import load_config
from kairos_gateway import (
    AccessLog,
    Gateway,
    GatewaySettings,
    Plugin,
    PluginRegistry,
    Policy,
    Request,
    ResponseHead,
)
from pydantic import BaseModel, ConfigDict, Field
from tornado.testing import bind_unused_port

from tests.conftest import RunningGateway

__all__ = ["DISTRIBUTION", "PLUGIN", "VERSION", "installed_plugin_gateway"]

DISTRIBUTION = "kairos-sample-plugin"
VERSION = "1.2.3"


class StampConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    header: str = Field("X-Stamp", description="The response header to set")
    value: str = Field(description="The header's value")


class Stamp(Policy):
    def __init__(self, config: StampConfig) -> None:
        self.config = config

    def on_response(self, request: Request, response: ResponseHead) -> None:
        response.headers.append((self.config.header, self.config.value))


PLUGIN = Plugin(
    name="stamp",
    config=StampConfig,
    policy=Stamp,
    priority=700,
    description="stamps every response with a header",
)


def _install(directory: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Put the distribution's metadata on ``sys.path``; returns its entry-point group."""
    group = f"kairos.test-plugins.{uuid.uuid4().hex}"
    info = directory / f"{DISTRIBUTION.replace('-', '_')}-{VERSION}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {VERSION}\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{group}]\nstamp = {__name__}:PLUGIN\nbroken = tests.no_such_module:PLUGIN\n"
    )
    monkeypatch.syspath_prepend(str(directory))
    return group


@asynccontextmanager
async def installed_plugin_gateway(
    config: dict[str, Any], directory: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningGateway]:
    """An in-process gateway on an unused port that finds the sample distribution's
    plugins (``stamp`` loads, ``broken`` is in the catalog's errors)."""
    registry = PluginRegistry(group=_install(directory, monkeypatch))
    buffer = io.BytesIO()
    gateway = Gateway(
        load_config(config),
        GatewaySettings(),
        access_log=AccessLog(buffer, "json"),
        plugins=registry,
    )
    sock, port = bind_unused_port()
    await gateway.start([sock])
    try:
        yield RunningGateway(gateway, port, buffer)
    finally:
        await gateway.stop(drain_timeout_s=1)
