"""The live configuration as one immutable object.

A `Snapshot` holds the validated config, the compiled route table and, per route,
everything the request path needs precomputed: the policy chain, the backends' shared
state, the balancer, the retry policy and budget, timeouts in seconds and the route's
metrics. The runtime swaps one reference to change configuration; a request keeps the
snapshot it started with.

Per-backend state (`BackendState`: in-flight count, latency EWMA, breaker, health)
lives in the `BackendRegistry`, outside the snapshot, so a new snapshot built for the
same backends picks up where the previous one left off. Building a snapshot never
changes the state of a backend already in the registry: settings that live there
(breaker thresholds, outlier detection and the route groups that limit ejections) are
listed in `Snapshot.breakers` and applied when the snapshot is activated, so a
snapshot that is prepared and then discarded leaves no trace.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kairos_core import (
    DEFAULT_CLIENT_SUBJECT_HEADER,
    Backend,
    CircuitBreakerConfig,
    CompiledRoute,
    ConfigError,
    CorsConfig,
    FieldError,
    GatewayConfig,
    HealthCheckConfig,
    JwtConfig,
    OutlierDetectionConfig,
    Router,
    RouteTable,
    effective_circuit_breaker,
    effective_health_check,
    effective_outlier_detection,
    effective_timeouts,
)

from .backends import BackendRegistry, BackendSettings, BackendState, endpoint_of
from .balancer import Balancer, build_balancer
from .chain import Chain, Policy
from .metrics import GatewayMetrics, RouteStats
from .outlier import Group
from .plugins import PluginRegistry
from .policies import (
    BodyLimit,
    ClientCertificate,
    CorsPolicy,
    JwtPolicy,
    RateLimitPolicy,
    SecurityHeaders,
)
from .ratelimit import RateLimiter, RateLimiters
from .retry import RetryBudget, RetryPolicy
from .services import PluginServices
from .upstream import Endpoint, PoolLimits
from .upstream.tls import TlsFileError, client_ssl_context

if TYPE_CHECKING:
    from .auth import JwtVerifier

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    route: CompiledRoute
    backends: tuple[BackendState, ...]  # config order; the balancer returns indexes
    balancer: Balancer
    retry: RetryPolicy | None
    budget: RetryBudget | None
    connect_timeout_s: float
    read_timeout_s: float
    #: Deadline for all tries of one request together (until response headers).
    total_timeout_s: float | None
    preserve_host: bool
    stats: RouteStats
    #: The route's policies, built-in and plugins, by phase.
    chain: Chain
    #: Answers CORS preflights for the route (also on the chain, for actual requests).
    cors: CorsPolicy | None
    #: Connection limits of each backend, in `backends` order.
    limits: tuple[PoolLimits, ...]
    #: Request body bytes read ahead of the backend, and kept for a replay.
    request_buffer_size: int
    replay_buffer_size: int


@dataclass(frozen=True, slots=True)
class HealthTarget:
    """One backend to watch: the first route naming a `health_check_path` for it wins.

    ``path`` None: no active check; the backend is only probed (a TCP connect) when its
    breaker is ready to go half-open and no request comes to do it."""

    state: BackendState
    path: str | None
    config: HealthCheckConfig


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: GatewayConfig
    table: RouteTable
    routes: tuple[RouteRuntime, ...]  # indexed by CompiledRoute.index
    health_targets: tuple[HealthTarget, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    verifier: JwtVerifier | None
    #: For requests that matched no route (top-level CORS, security headers).
    miss_chain: Chain
    #: For the gateway's own endpoints (security headers).
    endpoint_chain: Chain
    #: Breaker and outlier-detection settings per backend, applied when the snapshot
    #: goes live.
    breakers: tuple[BackendSettings, ...]
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

    def endpoints(self) -> set[Endpoint]:
        return {state.endpoint for runtime in self.routes for state in runtime.backends}

    def routes_down(self) -> list[str]:
        """Templates of the routes none of whose backends is in rotation now (every
        one unhealthy, ejected or with an open breaker): their requests get 503."""
        return [
            runtime.route.template
            for runtime in self.routes
            if runtime.backends and all(state.down() for state in runtime.backends)
        ]

    def routes_of(self, endpoint: Endpoint) -> list[str]:
        """Templates of the routes that use ``endpoint`` (for `/api/backends`)."""
        return [
            runtime.route.template
            for runtime in self.routes
            if any(state.endpoint == endpoint for state in runtime.backends)
        ]


def _verifier(jwt: JwtConfig | None, previous: Snapshot | None) -> JwtVerifier | None:
    if jwt is None:
        return None
    if previous is not None and previous.verifier is not None and previous.verifier.config == jwt:
        return previous.verifier
    from .auth import JwtVerifier  # pyjwt and cryptography load only when JWT is configured

    try:
        return JwtVerifier(jwt)
    except ValueError as exc:
        # Keys pydantic cannot judge (a public key that fits no allowed algorithm, a
        # secret too short for HS512): reported like any other config error.
        raise ConfigError([FieldError(("jwt",), str(exc))]) from exc


def _jwt_policy(verifier: JwtVerifier | None, jwt: JwtConfig | None, router: Router) -> JwtPolicy:
    # Validation guarantees a key source whenever a route needs auth.
    assert verifier is not None
    assert jwt is not None
    return JwtPolicy(
        verifier,
        required_claims=router.required_claims,
        forward_claims={**jwt.forward_claims, **(router.forward_claims or {})},
        strip_authorization=router.strip_authorization,
    )


_POLICY_NAME = re.compile(r"[A-Za-z0-9_.:/{}*-]{1,64}")


def _limiter(
    limiters: RateLimiters, config: GatewayConfig, router: Router, index: int
) -> RateLimiter | None:
    """The route's limiter. The top-level limit is one policy ("default") shared by
    every route without its own, so it counts per client across the gateway; a route's
    own limit counts separately, under the route's path as its policy name."""
    own = config.rate_limit_for(router)
    if own is None:
        return None
    if own is config.rate_limit:
        return limiters.get(own, name="default")
    name = (
        router.external_path if _POLICY_NAME.fullmatch(router.external_path) else f"route-{index}"
    )
    return limiters.get(own, name=name)


def _pool_limits(backend: Backend, config: GatewayConfig) -> PoolLimits:
    """The backend's own limits over the top-level ``connection_limits``, field by field
    (a backend shared by several routes: the first route naming it decides)."""
    top = config.connection_limits
    max_connections = backend.max_connections
    max_pending = backend.max_pending
    timeout_ms = backend.pending_timeout_ms
    return PoolLimits(
        max_connections=top.max_connections if max_connections is None else max_connections,
        max_pending=top.max_pending if max_pending is None else max_pending,
        pending_timeout_s=(top.pending_timeout_ms if timeout_ms is None else timeout_ms) / 1000,
    )


def _cors(config: CorsConfig | None) -> CorsPolicy | None:
    return None if config is None else CorsPolicy(config)


def _security_headers(config: GatewayConfig) -> list[Policy]:
    plain = config.security_headers.headers(https=False)
    if not plain:
        return []
    return [SecurityHeaders(plain, config.security_headers.headers(https=True))]


def _client_certificate(config: GatewayConfig) -> ClientCertificate:
    tls = config.listen.tls
    if tls is None:
        return ClientCertificate(DEFAULT_CLIENT_SUBJECT_HEADER, verify=False)
    return ClientCertificate(tls.client_subject_header, verify=tls.client_verification != "off")


def check_runtime(config: GatewayConfig, plugins: PluginRegistry) -> None:
    """Raise `ConfigError` for what kairos-core cannot judge without I/O, crypto or the
    installed plugins: a backend's TLS CA bundle or client certificate that cannot be
    read (or a key that does not fit its certificate), a JWT key that fits none of
    the allowed algorithms or is too short for one (HS512 needs 64 bytes), a plugin
    that is not installed or whose settings do not validate.

    Run by `--check` and before serving, so these fail at start-up with a field path
    instead of turning requests into 502s or 401s.
    """
    _verifier(config.effective_jwt(), None)
    _check_ca_files(config)
    plugins.check(config)


def _check_ca_files(config: GatewayConfig) -> None:
    errors: list[FieldError] = []
    for i, router in enumerate(config.routers):
        for j, backend in enumerate(router.backends):
            if backend.scheme != "https" or not (backend.tls_ca_file or backend.tls_cert_file):
                continue
            try:
                client_ssl_context(endpoint_of(backend))
            except TlsFileError as exc:
                errors.append(FieldError(("routers", i, "backends", j, exc.field), exc.detail))
    if errors:
        raise ConfigError(errors)


def build_snapshot(
    config: GatewayConfig,
    *,
    metrics: GatewayMetrics,
    registry: BackendRegistry,
    limiters: RateLimiters,
    plugins: PluginRegistry,
    services: PluginServices | None = None,
    generation: int = 1,
    source: Path | None = None,
    previous: Snapshot | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Snapshot:
    """Compile ``config``; backend state comes from (and new backends are added to)
    ``registry``, whose existing states are left as they are.

    The JWT verifier of ``previous`` is kept (with its token cache and JWKS keys) when
    the JWT settings did not change. Plugins get new instances.
    """
    _check_ca_files(config)
    plugins.check(config)
    table = RouteTable(config.routers)
    jwt = config.effective_jwt()
    verifier = _verifier(jwt, previous)
    rng = rng or random.Random()
    edge = _security_headers(config)
    client_cert = _client_certificate(config)
    runtimes: list[RouteRuntime] = []
    targets: dict[Endpoint, HealthTarget] = {}
    breakers: dict[Endpoint, tuple[BackendState, CircuitBreakerConfig, OutlierDetectionConfig]] = {}
    groups: dict[Endpoint, list[Group]] = {}
    #: Backends this build registered: no snapshot serves them yet.
    fresh: set[Endpoint] = set()
    pool_limits: dict[Endpoint, PoolLimits] = {}
    for compiled in table:
        router = compiled.config
        timeouts = effective_timeouts(router, config.timeouts)
        breaker = effective_circuit_breaker(router, config.circuit_breaker)
        health = effective_health_check(router, config.health_check)
        outlier = effective_outlier_detection(router, config.outlier_detection)
        # A backend shared by several routes gets the settings of the first route that
        # names it, for its breaker, outlier detection and health checks; each route's
        # own max_ejection_percent limits the ejections among its backends.
        for b in router.backends:
            endpoint = endpoint_of(b)
            if endpoint not in breakers and registry.get(endpoint) is None:
                fresh.add(endpoint)
        states = tuple(
            breakers.setdefault(
                endpoint_of(b), (registry.state(b, breaker, outlier), breaker, outlier)
            )[0]
            for b in router.backends
        )
        members = tuple(dict.fromkeys(states))
        group: Group = (members, outlier.max_ejected(len(members)))
        for state in members:
            groups.setdefault(state.endpoint, []).append(group)
        stats = metrics.route(compiled.template)
        cors = _cors(config.cors_for(router))
        limiter = _limiter(limiters, config, router, compiled.index)
        policies: list[Policy] = [BodyLimit(config.max_body_size_for(router)), *edge, client_cert]
        if cors is not None:
            policies.append(cors)
        if router.auth_required:
            policies.append(_jwt_policy(verifier, jwt, router))
        if limiter is not None:
            policies.append(RateLimitPolicy(limiter, template=compiled.template, stats=stats))
        policies += plugins.policies(config.plugins_for(compiled.index), services)
        for backend, state in zip(router.backends, states, strict=True):
            known = targets.get(state.endpoint)
            if backend.health_check_path and (known is None or known.path is None):
                targets[state.endpoint] = HealthTarget(state, backend.health_check_path, health)
            elif known is None:
                targets[state.endpoint] = HealthTarget(state, None, health)
        retry = router.retry_config
        runtimes.append(
            RouteRuntime(
                limits=tuple(
                    pool_limits.setdefault(endpoint_of(b), _pool_limits(b, config))
                    for b in router.backends
                ),
                route=compiled,
                backends=states,
                balancer=build_balancer(
                    router.load_balancing_strategy,
                    [b.weight for b in router.backends],
                    random.Random(rng.random()),
                    clock=clock,
                ),
                retry=RetryPolicy(retry) if retry is not None and retry.max_retries else None,
                budget=(
                    RetryBudget.from_config(retry, clock=clock)
                    if retry is not None and retry.max_retries
                    else None
                ),
                connect_timeout_s=timeouts.connect_ms / 1000,
                read_timeout_s=timeouts.read_ms / 1000,
                total_timeout_s=None if timeouts.total_ms is None else timeouts.total_ms / 1000,
                preserve_host=router.preserve_host,
                request_buffer_size=config.request_buffer_size,
                replay_buffer_size=config.replay_buffer_size_for(router),
                stats=stats,
                chain=Chain.build(policies, plugins.wrap),
                cors=cors,
            )
        )
    settings = tuple(
        BackendSettings(state, breaker, outlier, tuple(groups[endpoint]))
        for endpoint, (state, breaker, outlier) in breakers.items()
    )
    # A new backend knows its routes at once (the first snapshot is never "activated");
    # the states of live backends learn theirs only on activation.
    registry.configure(item for item in settings if item.state.endpoint in fresh)
    return Snapshot(
        config=config,
        table=table,
        routes=tuple(runtimes),
        health_targets=tuple(targets.values()),
        trusted_proxies=tuple(config.trusted_proxies),
        verifier=verifier,
        miss_chain=Chain.build([*edge, *filter(None, [_cors(config.cors)])]),
        endpoint_chain=Chain.build(edge),
        breakers=settings,
        generation=generation,
        loaded_at=time.time(),
        source=source,
    )
