"""Fixtures shared by every test tier: real backends and an in-process gateway."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kairos_core import load_config, load_config_file
from kairos_gateway import AccessLog, Gateway, GatewaySettings
from tornado.testing import bind_unused_port

from tests.redis_server import redis_server
from tests.support import EchoBackend

__all__ = ["redis_server"]  # a fixture for every test module


@dataclass
class RunningGateway:
    gateway: Gateway
    port: int
    access_buffer: io.BytesIO

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_lines(self) -> list[str]:
        self.gateway.access_log.flush()
        return self.access_buffer.getvalue().decode().splitlines()


GatewayFactory = Callable[..., Awaitable[RunningGateway]]
BackendFactory = Callable[..., Awaitable[EchoBackend]]


@pytest.fixture
async def backend_factory() -> AsyncIterator[BackendFactory]:
    started: list[EchoBackend] = []

    async def make(name: str = "backend", port: int = 0) -> EchoBackend:
        backend = await EchoBackend(name=name).start(port)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.release.set()
        await backend.stop()


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> EchoBackend:
    return await backend_factory()


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def make(
        config: dict[str, Any], *, ewma_decay_s: float = 10.0, **settings: Any
    ) -> RunningGateway:
        buffer = io.BytesIO()
        gateway = Gateway(
            load_config(config),
            GatewaySettings(**settings),
            access_log=AccessLog(buffer, "json"),
            ewma_decay_s=ewma_decay_s,
        )
        sock, port = bind_unused_port()
        await gateway.start([sock])
        started.append(gateway)
        return RunningGateway(gateway, port, buffer)

    yield make
    for gateway in started:
        await gateway.stop(drain_timeout_s=1)


@pytest.fixture
async def file_gateway_factory(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Like `gateway_factory`, but the config is written to ``tmp_path/config.json``
    (or ``path=``) first and the gateway runs from that file: changes are saved there
    and the file watcher follows it."""
    started: list[Gateway] = []

    async def make(
        config: dict[str, Any], *, path: Path | None = None, **settings: Any
    ) -> RunningGateway:
        source = path or tmp_path / "config.json"
        source.write_text(json.dumps(config, indent=2))
        buffer = io.BytesIO()
        gateway = Gateway(
            load_config_file(source),
            GatewaySettings(**settings),
            source=source,
            access_log=AccessLog(buffer, "json"),
        )
        sock, port = bind_unused_port()
        await gateway.start([sock])
        started.append(gateway)
        return RunningGateway(gateway, port, buffer)

    yield make
    for gateway in started:
        await gateway.stop(drain_timeout_s=1)
