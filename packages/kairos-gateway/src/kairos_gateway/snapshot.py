"""The live configuration as one immutable object.

A `Snapshot` holds the validated config, the compiled route table and, per route,
everything the request path needs precomputed: upstream endpoints, Host header values,
timeouts in seconds, the balancer and the route's metrics. The gateway swaps one
reference to change configuration; a request keeps the snapshot it started with.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from kairos_core import (
    Backend,
    CompiledRoute,
    ConfigError,
    FieldError,
    GatewayConfig,
    RouteTable,
    effective_timeouts,
)

from .balancer import RoundRobin
from .metrics import BackendStats, GatewayMetrics, RouteStats
from .upstream import Endpoint, UpstreamTLSError
from .upstream.tls import client_ssl_context

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Upstream:
    """One backend of one route, ready for the request path."""

    endpoint: Endpoint
    label: str
    stats: BackendStats


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    route: CompiledRoute
    upstreams: tuple[Upstream, ...]
    balancer: RoundRobin
    connect_timeout_s: float
    read_timeout_s: float
    preserve_host: bool
    stats: RouteStats
    #: Set when the route needs a feature this version cannot enforce safely (JWT
    #: verification): the route then answers 503 instead of serving unprotected.
    refusal: str | None = None

    def pick(self) -> Upstream:
        return self.upstreams[self.balancer.pick()]


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: GatewayConfig
    table: RouteTable
    routes: tuple[RouteRuntime, ...]  # indexed by CompiledRoute.index
    trusted_proxies: tuple[IPNetwork, ...]
    generation: int
    loaded_at: float
    source: Path | None

    def is_trusted_proxy(self, address: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)


def endpoint_for(backend: Backend) -> Endpoint:
    return Endpoint(
        scheme=backend.scheme,
        host=backend.hostname,
        port=backend.port,
        tls_verify=backend.tls_verify,
        tls_ca_file=backend.tls_ca_file,
    )


def check_local_files(config: GatewayConfig) -> None:
    """Raise `ConfigError` when a file the config names (a TLS CA bundle) is unusable.

    kairos-core validates without I/O; this is the gateway's half, run before serving,
    so a bad path fails at start-up instead of turning every request into a 502.
    """
    errors: list[FieldError] = []
    for i, router in enumerate(config.routers):
        for j, backend in enumerate(router.backends):
            if backend.scheme != "https" or not backend.tls_ca_file:
                continue
            try:
                client_ssl_context(endpoint_for(backend))
            except UpstreamTLSError:
                errors.append(
                    FieldError(
                        ("routers", i, "backends", j, "tls_ca_file"),
                        "cannot be read as a PEM CA bundle",
                        backend.tls_ca_file,
                    )
                )
    if errors:
        raise ConfigError(errors)


def unenforced_settings(config: GatewayConfig) -> list[str]:
    """Config settings that validate but are not enforced by this version yet.

    Ignoring them is safe except for `auth_required`, whose routes refuse requests
    (see `RouteRuntime.refusal`) rather than serve without authentication.
    """
    notes: list[str] = []
    if config.rate_limit is not None:
        notes.append("rate_limit: not enforced yet")
    for i, router in enumerate(config.routers):
        where = f"routers[{i}] ({router.external_path})"
        if router.auth_required:
            notes.append(f"{where}.auth_required: JWT verification not available yet; answers 503")
        if router.retry_config is not None:
            notes.append(f"{where}.retry_config: retries not performed yet")
        if router.load_balancing_strategy != "round_robin" and len(router.backends) > 1:
            notes.append(
                f"{where}.load_balancing_strategy={router.load_balancing_strategy}: "
                "round robin is used for now"
            )
    return notes


def build_snapshot(
    config: GatewayConfig,
    *,
    metrics: GatewayMetrics,
    generation: int = 1,
    source: Path | None = None,
) -> Snapshot:
    check_local_files(config)
    table = RouteTable(config.routers)
    runtimes: list[RouteRuntime] = []
    for compiled in table:
        router = compiled.config
        timeouts = effective_timeouts(router, config.timeouts)
        upstreams = tuple(
            Upstream(
                endpoint=endpoint_for(b),
                label=b.address,
                stats=metrics.backend(b.address),
            )
            for b in router.backends
        )
        runtimes.append(
            RouteRuntime(
                route=compiled,
                upstreams=upstreams,
                balancer=RoundRobin(len(upstreams)),
                connect_timeout_s=timeouts.connect_ms / 1000,
                read_timeout_s=timeouts.read_ms / 1000,
                preserve_host=router.preserve_host,
                stats=metrics.route(compiled.template),
                refusal=(
                    "this route requires authentication, which this gateway version "
                    "cannot verify yet"
                    if router.auth_required
                    else None
                ),
            )
        )
    return Snapshot(
        config=config,
        table=table,
        routes=tuple(runtimes),
        trusted_proxies=tuple(config.trusted_proxies),
        generation=generation,
        loaded_at=time.time(),
        source=source,
    )
