"""Fixtures shared by every test tier: real backends and an in-process gateway."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kairos_core import (
    CircuitBreakerConfig,
    GatewayConfig,
    effective_circuit_breaker,
    load_config,
    load_config_file,
)
from kairos_gateway import AccessLog, Gateway, GatewaySettings, PluginRegistry
from kairos_gateway.backends import endpoint_of
from kairos_gateway.upstream import Endpoint
from tornado.testing import bind_unused_port

from tests.redis_server import redis, redis_server
from tests.support import EchoBackend, eventually

__all__ = ["redis", "redis_server"]  # fixtures for every test module


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


def expected_breakers(config: GatewayConfig) -> dict[Endpoint, CircuitBreakerConfig]:
    """Breaker settings per backend as the config states them: the first route naming
    a backend decides (docs/configuration.md)."""
    out: dict[Endpoint, CircuitBreakerConfig] = {}
    for router in config.routers:
        for backend in router.backends:
            out.setdefault(
                endpoint_of(backend), effective_circuit_breaker(router, config.circuit_breaker)
            )
    return out


async def stop_at_rest(gateway: Gateway) -> None:
    """Stop ``gateway``, then check the state that must return to rest after any test:
    no backend has a request in flight, and every live breaker has the settings of the
    active configuration (a prepared-then-discarded change leaves no trace)."""
    await gateway.stop(drain_timeout_s=1)
    runtime = gateway.runtime
    # Cancelled request tasks release their attempts a loop turn or two later.
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: all(s.inflight == 0 for s in runtime.registry), timeout=2)
    leaked = {s.address: s.inflight for s in runtime.registry if s.inflight}
    assert not leaked, f"requests still counted in flight after the test: {leaked}"
    expected = expected_breakers(runtime.snapshot.config)
    for state in runtime.registry:
        assert state.breaker.config == expected[state.endpoint], (
            f"{state.address}: live breaker settings differ from the active config"
        )


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
        config: dict[str, Any],
        *,
        ewma_decay_s: float = 10.0,
        plugins: PluginRegistry | None = None,
        **settings: Any,
    ) -> RunningGateway:
        buffer = io.BytesIO()
        gateway = Gateway(
            load_config(config),
            GatewaySettings(**settings),
            access_log=AccessLog(buffer, "json"),
            ewma_decay_s=ewma_decay_s,
            plugins=plugins,
        )
        sock, port = bind_unused_port()
        await gateway.start([sock])
        started.append(gateway)
        return RunningGateway(gateway, port, buffer)

    yield make
    for gateway in started:
        await stop_at_rest(gateway)


@pytest.fixture
async def file_gateway_factory(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Like `gateway_factory`, but the config is written to ``tmp_path/config.json``
    (or ``path=``) first and the gateway runs from that file: changes are saved there
    and the file watcher follows it. Both take ``plugins=`` (a `PluginRegistry`: the
    installed plugins plus its ``extra`` ones)."""
    started: list[Gateway] = []

    async def make(
        config: dict[str, Any],
        *,
        path: Path | None = None,
        plugins: PluginRegistry | None = None,
        **settings: Any,
    ) -> RunningGateway:
        source = path or tmp_path / "config.json"
        source.write_text(json.dumps(config, indent=2))
        buffer = io.BytesIO()
        gateway = Gateway(
            load_config_file(source),
            GatewaySettings(**settings),
            source=source,
            access_log=AccessLog(buffer, "json"),
            plugins=plugins,
        )
        sock, port = bind_unused_port()
        await gateway.start([sock])
        started.append(gateway)
        return RunningGateway(gateway, port, buffer)

    yield make
    for gateway in started:
        await stop_at_rest(gateway)
